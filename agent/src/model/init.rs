//! Deterministic, backend-independent initialisation.
//!
//! Values are drawn on the host from a ChaCha stream derived from `(seed, stream)`, so the same
//! seed gives the same weights on flex, libtorch CPU and CUDA, and the STL head and the NDHTL
//! head's `W`, `b` are identical for the same seed (spec D-17). Bounds follow PyTorch's defaults:
//! `nn.Linear` and `nn.Conv2d` draw weight and bias from U(−1/√fan_in, 1/√fan_in).

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::pipeline::stream_seed;

/// Independent random streams, one per thing initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum InitStream {
    Features = 1,
    Classifier = 2,
    Alpha = 3,
    Modulator = 4,
    Fanout = 5,
}

/// A host-side RNG for one stream of one seed.
pub fn init_rng(seed: u64, stream: InitStream) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stream_seed(seed, 0xA11C_E000 + stream as u64))
}

/// A parameter with entries drawn from U(low, high).
pub fn uniform_param<const D: usize>(
    rng: &mut ChaCha8Rng,
    shape: [usize; D],
    low: f32,
    high: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|_| rng.random_range(low..high)).collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// PyTorch's default bound for a layer with `fan_in` inputs.
pub fn default_bound(fan_in: usize) -> f32 {
    1.0 / (fan_in as f32).sqrt()
}
