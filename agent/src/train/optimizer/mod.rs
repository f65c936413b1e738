//! SGD with momentum in PyTorch's convention, with weight decay only where the spec puts it
//! (D-19), as one fused pass per parameter.
//!
//! PyTorch: `d = g + wd·p; v = μ·v + d` (v = d on the first step); `p ← p − lr·v`.
//!
//! Burn's `Sgd` does this in about seven element-wise passes over every parameter, most of them
//! into a freshly allocated tensor (weight decay, dampening, momentum, learning-rate scaling,
//! the subtraction). At batch 1 those passes over the 2.47 M parameters were the largest cost of
//! a step after the convolutions (profiles in the README). [`FusedSgd`] does the same
//! arithmetic, in the same order and in f32, so that its results are Burn's `Sgd`'s bit for bit
//! (tested), but:
//! - on host memory (flex, and libtorch on the CPU) as **one loop** that reads p, g and v once
//!   and writes p and v in place; on the first step the gradient's buffer becomes the velocity
//!   ([`host`]);
//! - on a libtorch GPU with ATen's multi-tensor (foreach) kernels, in place, over all the
//!   parameters of a step at once: recorded per parameter, run by [`step_and_apply`] after
//!   Burn's optimizer has handed over every parameter (`torch`);
//! - anywhere else, or when a buffer is strided or not f32, with Burn's tensor ops.
//!
//! Its state is recorded under the names of Burn's `SgdState` (`momentum.velocity`), so
//! optimizer checkpoints written before it load unchanged (tested).

mod dispatch;
pub mod host;
#[cfg(feature = "tch")]
mod torch;

use burn::module::{Module, ParamGroup};
use burn::optim::{
    GradientsParams, LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource,
    join_path,
};
use burn::tensor::{Device, Tensor};
use std::cell::Cell;

use crate::model::CifarAlexNet;
use crate::process_setting::{self, ProcessSetting};

/// The arithmetic of one step, in the tensors' precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdHyper {
    pub lr: f32,
    /// μ; 0 keeps no velocity.
    pub momentum: f32,
    /// The L2 penalty added to the gradient; 0 adds nothing.
    pub weight_decay: f32,
}

/// How [`FusedSgd`] updates a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SgdKernel {
    /// The fastest that applies: the host loop on host memory, in-place ATen on a libtorch
    /// GPU, Burn's tensor ops otherwise.
    #[default]
    Auto,
    /// In-place ATen foreach kernels wherever the tensors are libtorch's (the GPU path, run on
    /// the CPU by tests and `scripts/op-census.sh`), Burn's tensor ops otherwise.
    InPlaceTorch,
    /// Burn's tensor ops only: the reference the fused paths are tested against.
    TensorOps,
}

/// SGD with momentum, fused; see the module documentation.
#[derive(Debug, Clone)]
pub struct FusedSgd {
    pub momentum: f32,
    pub weight_decay: f32,
    pub kernel: SgdKernel,
}

/// The velocity of one parameter (absent without momentum, and before the first step).
#[derive(Debug, Clone)]
pub struct FusedSgdState<const D: usize> {
    pub velocity: Option<Tensor<D>>,
}

/// Where Burn's `SgdState` records its velocity: `{param}.momentum.velocity`.
const MOMENTUM_FIELD: &str = "momentum";
const VELOCITY_FIELD: &str = "velocity";

impl<const D: usize> RecordState for FusedSgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(velocity) = &self.velocity {
            let path = join_path(prefix, MOMENTUM_FIELD);
            out.push_tensor(&path, VELOCITY_FIELD, velocity.clone().into_data());
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let path = join_path(prefix, MOMENTUM_FIELD);
        let velocity = src
            .take_tensor(&path, VELOCITY_FIELD)
            .map(|data| Tensor::from_data(data, device));
        Some(FusedSgdState { velocity })
    }
}

impl Optimizer for FusedSgd {
    type State<const D: usize> = FusedSgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let hyper = SgdHyper {
            lr: lr as f32,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
        };
        let velocity = state.and_then(|state| state.velocity);
        let (param, velocity) = fused_step(self.kernel, hyper, tensor, grad, velocity);
        debug_assert_eq!(velocity.is_some(), hyper.momentum != 0.0);
        (param, Some(FusedSgdState { velocity }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        FusedSgdState {
            velocity: state.velocity.map(|velocity| velocity.to_device(device)),
        }
    }
}

/// How many parameter updates took each path, on one thread: a fused path that silently stops
/// applying (a buffer that became shared after a Burn upgrade, say) shows up here, in tests and
/// in `ndhtl bench`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SgdPathCounts {
    pub host_loop: u64,
    pub inplace_torch: u64,
    pub tensor_ops: u64,
}

thread_local! {
    static PATH_COUNTS: Cell<SgdPathCounts> = const { Cell::new(SgdPathCounts { host_loop: 0, inplace_torch: 0, tensor_ops: 0 }) };
}

/// The paths this thread's parameter updates took so far.
pub fn sgd_path_counts() -> SgdPathCounts {
    PATH_COUNTS.with(Cell::get)
}

fn count_path(bump: impl FnOnce(&mut SgdPathCounts)) {
    PATH_COUNTS.with(|counts| {
        let mut value = counts.get();
        bump(&mut value);
        counts.set(value);
    });
}

/// One step of one parameter: the new parameter and velocity.
fn fused_step<const D: usize>(
    kernel: SgdKernel,
    hyper: SgdHyper,
    param: Tensor<D>,
    grad: Tensor<D>,
    velocity: Option<Tensor<D>>,
) -> (Tensor<D>, Option<Tensor<D>>) {
    let mut parts = dispatch::Parts::new(param, grad, velocity);
    if kernel == SgdKernel::Auto {
        parts = match host::try_step(hyper, parts) {
            Ok(done) => {
                count_path(|counts| counts.host_loop += 1);
                return done.into_tensors();
            }
            Err(parts) => parts,
        };
    }
    #[cfg(feature = "tch")]
    if kernel != SgdKernel::TensorOps {
        parts = match torch::try_deferred_step(hyper, parts) {
            Ok(done) => {
                count_path(|counts| counts.inplace_torch += 1);
                return done.into_tensors();
            }
            Err(parts) => parts,
        };
    }
    count_path(|counts| counts.tensor_ops += 1);
    let (param, grad, velocity) = parts.into_tensors();
    tensor_ops_step(hyper, param, grad, velocity)
}

/// The reference: Burn's `Sgd` (weight decay, momentum with dampening 0, no Nesterov), op for
/// op (its `d·(1 − dampening)` is `d·1`, exact, and left out).
fn tensor_ops_step<const D: usize>(
    hyper: SgdHyper,
    param: Tensor<D>,
    grad: Tensor<D>,
    velocity: Option<Tensor<D>>,
) -> (Tensor<D>, Option<Tensor<D>>) {
    let mut direction = grad;
    if hyper.weight_decay != 0.0 {
        direction = param.clone().mul_scalar(hyper.weight_decay).add(direction);
    }
    if hyper.momentum == 0.0 {
        return (param - direction.mul_scalar(hyper.lr), None);
    }
    let velocity = match velocity {
        Some(velocity) => direction.add(velocity.mul_scalar(hyper.momentum)),
        None => direction,
    };
    (
        param - velocity.clone().mul_scalar(hyper.lr),
        Some(velocity),
    )
}

/// One optimizer step of `module`: Burn's `step`, then the parameter updates it deferred (the
/// GPU path, `torch`). Every training loop steps through this, never `optimizer.step`
/// alone, or a GPU's parameters would not change.
pub fn step_and_apply<M: Module>(
    optimizer: &mut ModuleOptimizer,
    lr: LearningRate,
    module: M,
    grads: GradientsParams,
) -> M {
    // Left over only by a step that panicked half-way (a job that failed on this thread):
    // those tensors belong to no model any more.
    #[cfg(feature = "tch")]
    torch::discard_deferred_steps();
    let module = optimizer.step(lr, module, grads);
    #[cfg(feature = "tch")]
    if let Err(error) = torch::flush_deferred_steps() {
        // As a failing libtorch operator does everywhere else in a step: the job fails on
        // this attempt with the message kept (`runtime`), and the agent goes on.
        panic!("SGD step: {error}");
    }
    module
}

static KERNEL: ProcessSetting<SgdKernel> = ProcessSetting::new(&[
    SgdKernel::Auto,
    SgdKernel::InPlaceTorch,
    SgdKernel::TensorOps,
]);

impl SgdKernel {
    /// This process's setting for [`build_optimizer`] ([`SgdKernel::Auto`] unless set).
    pub fn current() -> Self {
        KERNEL.current()
    }

    /// Makes it this process's setting; returns the previous one.
    pub fn apply(self) -> Self {
        KERNEL.replace(self)
    }

    /// The setting `NDHTL_SGD` asks for ([`SgdKernel::Auto`] when unset).
    pub fn from_environment() -> Result<Self, UnknownSgdKernel> {
        process_setting::from_environment("NDHTL_SGD")
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "NDHTL_SGD=`{0}`: expected `auto` (the default), `aten` (the GPU's foreach path, on libtorch) or `burn`"
)]
pub struct UnknownSgdKernel(String);

impl std::str::FromStr for SgdKernel {
    type Err = UnknownSgdKernel;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" | "" => Ok(SgdKernel::Auto),
            "aten" => Ok(SgdKernel::InPlaceTorch),
            "burn" => Ok(SgdKernel::TensorOps),
            other => Err(UnknownSgdKernel(other.to_string())),
        }
    }
}

fn sgd(momentum: f64, weight_decay: f64, kernel: SgdKernel) -> FusedSgd {
    FusedSgd {
        momentum: momentum as f32,
        weight_decay: weight_decay as f32,
        kernel,
    }
}

/// Weight decay on the conv parameters, W and b; none on α, η, the modulator and fan-out
/// (spec D-19). The update takes this process's [`SgdKernel`] (`NDHTL_SGD`; the fastest path
/// unless set).
pub fn build_optimizer(model: &CifarAlexNet, momentum: f64, weight_decay: f64) -> ModuleOptimizer {
    build_optimizer_with(model, momentum, weight_decay, SgdKernel::current())
}

/// [`build_optimizer`] with a chosen kernel (tests compare them).
pub fn build_optimizer_with(
    model: &CifarAlexNet,
    momentum: f64,
    weight_decay: f64,
    kernel: SgdKernel,
) -> ModuleOptimizer {
    let optimizer = ModuleOptimizer::from(sgd(momentum, weight_decay, kernel));
    match &model.plastic {
        Some(plastic) => optimizer.with_group(
            ParamGroup::ids_from_module(plastic.clone()),
            sgd(momentum, 0.0, kernel),
            None,
        ),
        None => optimizer,
    }
}
