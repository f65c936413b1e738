//! Autodiff on libtorch: the convolution's backward is ATen's `convolution_backward` (oneDNN
//! or ATen's own kernels on the CPU, cuDNN on a GPU), the kernels PyTorch's
//! `ConvolutionBackward0` runs. Where [`ConvolutionGradients`] says Burn's formulas are faster
//! (large batches on the CPU), it is Burn's differentiable `conv2d` instead.
//!
//! Forward: burn-tch's convolution, with Burn's handles of the input and weight kept as the
//! backward's state. While they live, burn-tch sees those buffers as shared and never updates
//! them in place, so the backward reads the values the forward saw. Backward: one call of
//! `convolution_backward` (`crate::aten_ops`) for the gradients of exactly the tracked inputs,
//! which go into Burn's graph.
//!
//! Until 2026-12-03 the convolution was recorded in libtorch's own autograd and differentiated
//! by `run_backward` of `sum(output · grad)`: the same kernel at the end, but four more
//! operators around it per convolution (the product, the sum, the seed of ones, the product's
//! backward), which the op census (`scripts/op-census.sh`) showed.
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, LibTorch};

use super::conv::{ConvolutionBackend, ConvolutionGradients};
use crate::aten_ops::{Conv2dGeometry, convolution_backward};

impl<C: CheckpointStrategy> ConvolutionBackend for Autodiff<LibTorch, C> {
    fn conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let batch = x.primitive().tensor.size().first().copied().unwrap_or(1);
        let on_gpu = x.primitive().tensor.device().is_cuda();
        let batch = usize::try_from(batch).unwrap_or(usize::MAX);
        if !ConvolutionGradients::current().libtorch_backward(batch, on_gpu) {
            // Burn's own differentiable convolution, with its gradient formulas.
            return <Self as ModuleOps<Self>>::conv2d(x, weight, Some(bias), options);
        }
        let prepared = AtenConvolution
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let x = x.into_primitive();
        let weight = weight.into_primitive();
        let bias = bias.into_primitive();
        match prepared {
            OpsKind::Tracked(prep) => {
                let saved = SavedConvolution {
                    x: x.clone(),
                    weight: weight.clone(),
                    geometry: geometry(&options),
                };
                prep.finish(saved, LibTorch::conv2d(x, weight, Some(bias), options))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(LibTorch::conv2d(x, weight, Some(bias), options))
            }
        }
    }
}

fn geometry(options: &ConvOptions<2>) -> Conv2dGeometry {
    debug_assert!(
        !options.is_asymmetric(),
        "conv2d() passes symmetric padding only"
    );
    let as_i64 = |values: [usize; 2]| values.map(|value| value as i64);
    Conv2dGeometry {
        stride: as_i64(options.stride),
        padding: as_i64(options.padding_begin()),
        dilation: as_i64(options.dilation),
        groups: options.groups as i64,
    }
}

/// The backward step of one convolution.
#[derive(Debug)]
struct AtenConvolution;

impl Backward<LibTorch, 3> for AtenConvolution {
    type State = SavedConvolution;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<LibTorch>(&ops.node);
        let wanted = [node_x.is_some(), node_weight.is_some(), node_bias.is_some()];
        let SavedConvolution {
            x,
            weight,
            geometry,
        } = ops.state;
        // Burn's backward cannot return an error: a libtorch failure (a GPU out of memory)
        // panics with its message, which fails the job and keeps the message (`runtime`).
        let [grad_x, grad_weight, grad_bias] =
            convolution_backward(&grad.tensor, &x.tensor, &weight.tensor, &geometry, wanted)
                .unwrap_or_else(|error| panic!("convolution backward: {error}"));
        let registrations = [
            (node_x, grad_x),
            (node_weight, grad_weight),
            (node_bias, grad_bias),
        ];
        for (node, gradient) in registrations {
            if let (Some(node), Some(gradient)) = (node, gradient) {
                grads.register::<LibTorch>(node.id, TchTensor::new(gradient));
            }
        }
    }
}

/// What the backward of one convolution reads: Burn's handles of its input and weight, and
/// its geometry.
#[derive(Debug, Clone)]
pub struct SavedConvolution {
    x: TchTensor,
    weight: TchTensor,
    geometry: Conv2dGeometry,
}
