//! Softmax and log-softmax as one differentiable operation each, with their analytic gradients.
//!
//! Burn 0.22's autodiff has no softmax of its own: `softmax` and `log_softmax` on an autodiff
//! backend run the backend trait's composite (detached max, subtract, exp, sum, divide, and a log
//! for log-softmax), every step a graph node, and their backward about a dozen more operations
//! (the sum's backward alone allocates a tensor of ones and multiplies by it). At batch 1 each
//! of those is a kernel launch on a GPU, and an NDHTL step takes one softmax (P2) and one
//! log-softmax (the loss).
//!
//! Here each is one node. Its forward is the backend's own softmax (flex and libtorch have
//! native kernels; log-softmax is native on libtorch). Its backward is, for `y = softmax(x)`
//! and `o = log_softmax(x)` along `dim`, with output gradient `g`:
//!
//! ```text
//! dx = y ⊙ (g − Σ_dim g ⊙ y)        (softmax)
//! dx = g − exp(o) ⊙ Σ_dim g          (log-softmax)
//! ```
//!
//! four backend operations each by default, and ATen's one fused kernel on libtorch
//! (`_softmax_backward_data`, `_log_softmax_backward_data`, what PyTorch runs).
//!
//! [`SoftmaxKernels`] (`NDHTL_SOFTMAX`) can ask for Burn's composite instead (and for Burn's
//! chain of nodes for the cross-entropy, `loss::burns_cross_entropy`): for side-by-side
//! benchmarks (`ndhtl bench`, the `*_burn_softmax` workloads), tests, and as a way back
//! without a rebuild.
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::activation;

use crate::process_setting::{self, ProcessSetting};

/// Softmax and log-softmax, and the products of their Jacobians with an output gradient.
/// The default bodies are Burn's forward and the formulas above in backend operations; only
/// libtorch replaces the backward, and autodiff wires them into one graph node each.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait SoftmaxBackend: Backend {
    fn fused_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        Self::softmax(x, dim)
    }

    fn fused_log_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        Self::log_softmax(x, dim)
    }

    /// `y ⊙ (g − Σ_dim g ⊙ y)` for the softmax output `y`.
    fn softmax_backward(
        grad: FloatTensor<Self>,
        output: FloatTensor<Self>,
        dim: usize,
    ) -> FloatTensor<Self> {
        let weighted = Self::float_mul(grad, output.clone());
        let total = Self::float_sum_dim(weighted.clone(), dim);
        Self::float_sub(weighted, Self::float_mul(output, total))
    }

    /// `g − exp(o) ⊙ Σ_dim g` for the log-softmax output `o`.
    fn log_softmax_backward(
        grad: FloatTensor<Self>,
        output: FloatTensor<Self>,
        dim: usize,
    ) -> FloatTensor<Self> {
        let total = Self::float_sum_dim(grad.clone(), dim);
        Self::float_sub(grad, Self::float_mul(Self::float_exp(output), total))
    }
}

impl SoftmaxBackend for Flex {}

#[cfg(feature = "tch")]
impl SoftmaxBackend for burn::backend::LibTorch {
    fn softmax_backward(
        grad: FloatTensor<Self>,
        output: FloatTensor<Self>,
        dim: usize,
    ) -> FloatTensor<Self> {
        let kind = output.tensor.kind();
        burn::backend::libtorch::TchTensor::new(tch::Tensor::internal_softmax_backward_data(
            &grad.tensor,
            &output.tensor,
            dim as i64,
            kind,
        ))
    }

    fn log_softmax_backward(
        grad: FloatTensor<Self>,
        output: FloatTensor<Self>,
        dim: usize,
    ) -> FloatTensor<Self> {
        let kind = output.tensor.kind();
        burn::backend::libtorch::TchTensor::new(tch::Tensor::internal_log_softmax_backward_data(
            &grad.tensor,
            &output.tensor,
            dim as i64,
            kind,
        ))
    }
}

/// One softmax or log-softmax node; its backward state is the output and the axis.
#[derive(Debug, Clone, Copy)]
enum SoftmaxStep {
    Softmax,
    LogSoftmax,
}

impl SoftmaxStep {
    fn forward<B: SoftmaxBackend>(self, x: FloatTensor<B>, dim: usize) -> FloatTensor<B> {
        match self {
            SoftmaxStep::Softmax => B::fused_softmax(x, dim),
            SoftmaxStep::LogSoftmax => B::fused_log_softmax(x, dim),
        }
    }

    /// Records the node on autodiff over `B`. Compute-bound: the output is kept for the
    /// backward rather than recomputed.
    fn record<B: SoftmaxBackend, C: CheckpointStrategy>(
        self,
        x: FloatTensor<Autodiff<B, C>>,
        dim: usize,
    ) -> FloatTensor<Autodiff<B, C>> {
        match self.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = self.forward::<B>(x.into_primitive(), dim);
                prep.finish((output.clone(), dim), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(self.forward::<B>(x.into_primitive(), dim)),
        }
    }
}

impl<B: SoftmaxBackend> Backward<B, 1> for SoftmaxStep {
    type State = (FloatTensor<B>, usize);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (output, dim) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| match self {
            SoftmaxStep::Softmax => B::softmax_backward(grad, output, dim),
            SoftmaxStep::LogSoftmax => B::log_softmax_backward(grad, output, dim),
        });
    }
}

impl<B: SoftmaxBackend, C: CheckpointStrategy> SoftmaxBackend for Autodiff<B, C> {
    fn fused_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        SoftmaxStep::Softmax.record::<B, C>(x, dim)
    }

    fn fused_log_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        SoftmaxStep::LogSoftmax.record::<B, C>(x, dim)
    }
}

/// Which softmax the model runs (`NDHTL_SOFTMAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SoftmaxKernels {
    /// One graph node each, with the analytic backward ([`SoftmaxBackend`]). The default.
    #[default]
    Fused,
    /// Burn's `activation::softmax` and `activation::log_softmax`, unchanged, and Burn's
    /// cross-entropy built on them.
    Burn,
}

static MODE: ProcessSetting<SoftmaxKernels> =
    ProcessSetting::new(&[SoftmaxKernels::Fused, SoftmaxKernels::Burn]);

impl SoftmaxKernels {
    /// This process's setting ([`SoftmaxKernels::Fused`] unless set).
    pub fn current() -> Self {
        MODE.current()
    }

    /// Makes it this process's setting; returns the previous one.
    pub fn apply(self) -> Self {
        MODE.replace(self)
    }

    /// The setting `NDHTL_SOFTMAX` asks for ([`SoftmaxKernels::Fused`] when unset).
    pub fn from_environment() -> Result<Self, UnknownSoftmaxKernels> {
        process_setting::from_environment("NDHTL_SOFTMAX")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("NDHTL_SOFTMAX=`{0}`: expected `fused` (the default) or `burn`")]
pub struct UnknownSoftmaxKernels(String);

impl std::str::FromStr for SoftmaxKernels {
    type Err = UnknownSoftmaxKernels;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "fused" | "" => Ok(SoftmaxKernels::Fused),
            "burn" => Ok(SoftmaxKernels::Burn),
            other => Err(UnknownSoftmaxKernels(other.to_string())),
        }
    }
}

/// Softmax of `x` along `dim`: Burn's values, one graph node.
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    debug_assert!(dim < D, "softmax along axis {dim} of a rank-{D} tensor");
    if SoftmaxKernels::current() == SoftmaxKernels::Burn {
        return activation::softmax(x, dim);
    }
    Tensor::from_dispatch(<Dispatch as SoftmaxBackend>::fused_softmax(
        x.into_dispatch(),
        dim,
    ))
}

/// Log-softmax of `x` along `dim`: Burn's values, one graph node.
pub fn log_softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    debug_assert!(dim < D, "log-softmax along axis {dim} of a rank-{D} tensor");
    if SoftmaxKernels::current() == SoftmaxKernels::Burn {
        return activation::log_softmax(x, dim);
    }
    Tensor::from_dispatch(<Dispatch as SoftmaxBackend>::fused_log_softmax(
        x.into_dispatch(),
        dim,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses_from_its_names_and_rejects_others_by_name() {
        assert_eq!(
            "fused".parse::<SoftmaxKernels>().unwrap(),
            SoftmaxKernels::Fused
        );
        assert_eq!("".parse::<SoftmaxKernels>().unwrap(), SoftmaxKernels::Fused);
        assert_eq!(
            "burn".parse::<SoftmaxKernels>().unwrap(),
            SoftmaxKernels::Burn
        );
        let error = "aten".parse::<SoftmaxKernels>().unwrap_err();
        assert!(
            error.to_string().contains("NDHTL_SOFTMAX=`aten`"),
            "{error}"
        );
    }
}
