//! The fused SGD step on host memory: one loop over the f32 buffers of a parameter, its
//! gradient and its velocity (flex tensors, and libtorch tensors on the CPU).

use burn::backend::flex::FlexTensor;
use burn::backend::{BackendTensor, DispatchTensorKind};
use burn::tensor::DType;
use rayon::prelude::*;

use super::SgdHyper;
use super::dispatch::{BackendFloat, Done, Parts, PathResult, on_backend};

/// Elements per parallel task: large enough that a task costs more than its scheduling.
const CHUNK: usize = 1 << 15;

/// Which threads run the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostThreads {
    /// The current rayon pool (flex's, whose kernels run there too).
    Rayon,
    /// The calling thread only, for libtorch tensors: libtorch's OpenMP threads own the
    /// cores, so no second pool is started beside them (measured on 2 cores: rayon and the
    /// calling thread give the same throughput, within noise).
    Caller,
}

/// `d = p·wd + g`, then `v = d + v·μ`, then `p = p − v·lr` (without momentum, `p = p − d·lr`),
/// each operation in the order Burn's `Sgd` performs it and rounded to f32 as its element-wise
/// ops round, so that the results are the same bits. When `velocity` is `None` and
/// `write_direction` is set, `grad` is overwritten with d: the first step's velocity.
pub fn host_sgd_update(
    hyper: SgdHyper,
    param: &mut [f32],
    grad: &mut [f32],
    velocity: Option<&mut [f32]>,
    write_direction: bool,
    threads: HostThreads,
) {
    assert_eq!(param.len(), grad.len(), "parameter and gradient lengths");
    match (velocity, threads) {
        (Some(velocity), HostThreads::Rayon) => {
            assert_eq!(velocity.len(), param.len(), "velocity length");
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(velocity.par_chunks_mut(CHUNK))
                .for_each(|((p, g), v)| update_with_velocity(hyper, p, g, v));
        }
        (Some(velocity), HostThreads::Caller) => {
            assert_eq!(velocity.len(), param.len(), "velocity length");
            update_with_velocity(hyper, param, grad, velocity);
        }
        (None, HostThreads::Rayon) => {
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks_mut(CHUNK))
                .for_each(|(p, g)| update_along_direction(hyper, p, g, write_direction));
        }
        (None, HostThreads::Caller) => {
            update_along_direction(hyper, param, grad, write_direction);
        }
    }
}

fn direction(hyper: SgdHyper, p: f32, g: f32) -> f32 {
    if hyper.weight_decay != 0.0 {
        p * hyper.weight_decay + g
    } else {
        g
    }
}

fn update_with_velocity(hyper: SgdHyper, param: &mut [f32], grad: &[f32], velocity: &mut [f32]) {
    for ((p, g), v) in param.iter_mut().zip(grad).zip(velocity.iter_mut()) {
        *v = direction(hyper, *p, *g) + *v * hyper.momentum;
        *p -= *v * hyper.lr;
    }
}

fn update_along_direction(
    hyper: SgdHyper,
    param: &mut [f32],
    grad: &mut [f32],
    write_direction: bool,
) {
    for (p, g) in param.iter_mut().zip(grad.iter_mut()) {
        let d = direction(hyper, *p, *g);
        if write_direction {
            *g = d;
        }
        *p -= d * hyper.lr;
    }
}

/// A tensor whose f32 elements can be borrowed mutably on the host: without a copy when it
/// owns its buffer.
pub trait HostBuffer {
    /// Which threads update this backend's buffers.
    const THREADS: HostThreads;
    fn host_f32_mut(&mut self) -> Option<&mut [f32]>;
}

impl HostBuffer for FlexTensor {
    const THREADS: HostThreads = HostThreads::Rayon;
    fn host_f32_mut(&mut self) -> Option<&mut [f32]> {
        if self.dtype() != DType::F32 {
            return None;
        }
        if self.layout().contiguous_offsets().is_none() {
            // A strided view (flex's convolution backward returns the weight gradient
            // transposed): one copy into a buffer of our own.
            *self = self.to_contiguous();
        }
        let (start, end) = self.layout().contiguous_offsets()?;
        // Copy-on-write: a shared buffer is copied first (one pass), never aliased.
        Some(&mut self.storage_mut::<f32>()[start..end])
    }
}

impl BackendFloat for FlexTensor {
    fn is(kind: &DispatchTensorKind) -> bool {
        matches!(kind, DispatchTensorKind::Flex(BackendTensor::Float(_)))
    }
    fn take(kind: DispatchTensorKind) -> Self {
        match kind {
            DispatchTensorKind::Flex(BackendTensor::Float(tensor)) => tensor,
            _ => unreachable!("checked by BackendFloat::is"),
        }
    }
    fn wrap(self) -> DispatchTensorKind {
        DispatchTensorKind::Flex(BackendTensor::Float(self))
    }
}

/// [`host_sgd_update`] on three buffers of one backend, or the buffers back untouched.
pub fn host_step_on<T: HostBuffer>(
    hyper: SgdHyper,
    mut param: T,
    mut grad: T,
    mut velocity: Option<T>,
) -> PathResult<T> {
    let usable = param.host_f32_mut().is_some()
        && grad.host_f32_mut().is_some()
        && velocity.as_mut().is_none_or(|v| v.host_f32_mut().is_some());
    if !usable {
        return Err((param, grad, velocity));
    }
    let p = param.host_f32_mut().expect("checked above");
    let g = grad.host_f32_mut().expect("checked above");
    let keeps_velocity = hyper.momentum != 0.0;
    match velocity {
        Some(mut velocity) if keeps_velocity => {
            host_sgd_update(hyper, p, g, velocity.host_f32_mut(), false, T::THREADS);
            Ok((param, Some(velocity)))
        }
        // The first step: the gradient's buffer, turned into d, becomes the velocity.
        None if keeps_velocity => {
            host_sgd_update(hyper, p, g, None, true, T::THREADS);
            Ok((param, Some(grad)))
        }
        _ => {
            host_sgd_update(hyper, p, g, None, false, T::THREADS);
            Ok((param, None))
        }
    }
}

/// The host loop, if all three tensors are on one host backend.
// `Parts` hands three tensors back by value, once per parameter per step: boxing them
// would cost an allocation for nothing.
#[allow(clippy::result_large_err)]
pub fn try_step(hyper: SgdHyper, parts: Parts) -> Result<Done, Parts> {
    let parts = match on_backend::<FlexTensor>(hyper, parts, host_step_on) {
        Ok(done) => return Ok(done),
        Err(parts) => parts,
    };
    #[cfg(feature = "tch")]
    let parts = match super::torch::try_host_step(hyper, parts) {
        Ok(done) => return Ok(done),
        Err(parts) => parts,
    };
    Err(parts)
}
