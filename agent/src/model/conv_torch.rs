//! The network's convolutions on libtorch, as [`ConvolutionGradients`] chooses
//! ([`LibTorchConvolution`]): at batch 1 on the CPU ndhtl's host convolution
//! ([`super::conv_torch_host`]); on a GPU, on the CPU up to batch 8, and wherever
//! `NDHTL_CONV_GRADIENTS=backend` asks, libtorch's forward with ATen's
//! `convolution_backward` (oneDNN or ATen's own kernels on the CPU, cuDNN on a GPU), the kernels
//! PyTorch's `ConvolutionBackward0` runs; above batch 8 on the CPU, and with `=burn`, Burn's
//! differentiable `conv2d`.
//!
//! ATen's path. Forward: burn-tch's convolution, with Burn's handles of the input and weight kept as the
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

use super::conv::{ConvolutionBackend, ConvolutionGradients, LibTorchConvolution};
use super::conv_host_node::{
    HostMemoryBackend, host_convolution, host_shape, register_convolution_gradients,
};
use crate::aten_ops::{Conv2dGeometry, convolution_backward};

impl ConvolutionBackend for LibTorch {
    fn conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        if choice(&x) == LibTorchConvolution::Host
            && let Some(shape) = host_shape::<LibTorch>(&x, &weight, &bias, &options)
        {
            return LibTorch::host_forward(&shape, &x, &weight, &bias);
        }
        LibTorch::conv2d(x, weight, Some(bias), options)
    }
}

impl<C: CheckpointStrategy> ConvolutionBackend for Autodiff<LibTorch, C> {
    fn conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match choice(x.primitive()) {
            LibTorchConvolution::Burn => {
                // Burn's own differentiable convolution, with its gradient formulas.
                <Self as ModuleOps<Self>>::conv2d(x, weight, Some(bias), options)
            }
            LibTorchConvolution::Host => {
                let shape = host_shape::<LibTorch>(
                    x.primitive(),
                    weight.primitive(),
                    bias.primitive(),
                    &options,
                );
                match shape {
                    Some(shape) => host_convolution::<LibTorch, C>(shape, x, weight, bias),
                    None => aten_convolution::<C>(x, weight, bias, options),
                }
            }
            LibTorchConvolution::Aten => aten_convolution::<C>(x, weight, bias, options),
        }
    }
}

/// What [`ConvolutionGradients`] asks of a convolution of `x`, by its batch and device.
fn choice(x: &TchTensor) -> LibTorchConvolution {
    let batch = x.tensor.size().first().copied().unwrap_or(1);
    let batch = usize::try_from(batch).unwrap_or(usize::MAX);
    ConvolutionGradients::current().libtorch(batch, x.tensor.device().is_cuda())
}

/// libtorch's forward and ATen's `convolution_backward`, one node for the three gradients.
fn aten_convolution<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<LibTorch, C>>,
    weight: FloatTensor<Autodiff<LibTorch, C>>,
    bias: FloatTensor<Autodiff<LibTorch, C>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<LibTorch, C>> {
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
        OpsKind::UnTracked(prep) => prep.finish(LibTorch::conv2d(x, weight, Some(bias), options)),
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
        let parents = ops.parents.map(|parent| parent.map(|node| node.id));
        let grad = grads.consume::<LibTorch>(&ops.node);
        let wanted = parents.map(|parent| parent.is_some());
        let SavedConvolution {
            x,
            weight,
            geometry,
        } = ops.state;
        // Burn's backward cannot return an error: a libtorch failure (a GPU out of memory)
        // panics with its message, which fails the job and keeps the message (`runtime`).
        let gradients =
            convolution_backward(&grad.tensor, &x.tensor, &weight.tensor, &geometry, wanted)
                .unwrap_or_else(|error| panic!("convolution backward: {error}"));
        let gradients = gradients.map(|gradient| gradient.map(TchTensor::new));
        register_convolution_gradients::<LibTorch>(grads, parents, gradients);
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
