//! ReLU as one graph node whose backward is one kernel on libtorch.
//!
//! Burn 0.22's autodiff differentiates ReLU with the backend trait's default
//! `relu_backward`, which burn-tch does not override: a comparison into a float tensor, its
//! conversion to a bool mask, and a masked fill, three ATen operators (and on a GPU three
//! kernel launches) per ReLU. On libtorch this takes ATen's `threshold_backward`, the one
//! kernel PyTorch's `ReluBackward0` runs. The values are the same bit for bit: the gradient
//! where the output is above 0, and 0 where it is not (`tests/relu.rs`). Elsewhere the node
//! is Burn's own formula.
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;

/// ReLU and the product of its Jacobian with an output gradient. The default bodies are
/// Burn's; libtorch replaces the backward, and autodiff wires them into one node.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait ReluBackend: Backend {
    fn fused_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(x)
    }

    /// `grad` where `output > 0`, 0 elsewhere.
    fn fused_relu_backward(
        output: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::relu_backward(output, grad)
    }
}

impl ReluBackend for Flex {}

#[cfg(feature = "tch")]
impl ReluBackend for burn::backend::LibTorch {
    fn fused_relu_backward(
        output: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // tch's receiver is ATen's `self`, the output; `grad_output` is the argument.
        burn::backend::libtorch::TchTensor::new(output.tensor.threshold_backward(&grad.tensor, 0))
    }
}

/// The ReLU node; its backward state is the output.
#[derive(Debug, Clone, Copy)]
struct ReluStep;

impl<B: ReluBackend> Backward<B, 1> for ReluStep {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let output = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::fused_relu_backward(output, grad)
        });
    }
}

impl<B: ReluBackend, C: CheckpointStrategy> ReluBackend for Autodiff<B, C> {
    fn fused_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // Compute-bound: the output is kept for the backward rather than recomputed.
        match ReluStep.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::fused_relu(x.into_primitive());
                prep.finish(output.clone(), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_relu(x.into_primitive())),
        }
    }
}

/// ReLU of `x`: Burn's values, one graph node.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ReluBackend>::fused_relu(x.into_dispatch()))
}
