//! libtorch's CPU tensors through ndhtl's batched host convolution ([`super::conv_host`]), the
//! kernels flex runs: forward (inference) and as one autodiff node whose backward computes the
//! three gradients together.
//!
//! On the CPU the host convolution reads libtorch's memory in place (a copy only of a strided
//! input) and writes the forward's output straight into a fresh libtorch tensor. Measured on the
//! 2-core CPU (README, "Benchmark", rows `*_aten_conv`), it is faster than ATen's convolution
//! (oneDNN) and its backward at batch 1, where a step is nearly all convolution.
//!
//! Where the convolution is not one it takes (a GPU tensor, another float type than f32,
//! groups, a shape [`ConvShape`] refuses), [`host_shape`] says so and the caller takes
//! libtorch's own (`super::conv_torch`).
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::LibTorch;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::libtorch::TchTensor;
use burn::backend::ops::ConvOptions;

use super::conv_host::{ConvShape, conv2d_backward, conv2d_forward_into};

/// The host shape of this convolution, when [`super::conv_host`] takes it: f32 tensors on the
/// CPU, one group, symmetric padding.
pub fn host_shape(
    x: &TchTensor,
    weight: &TchTensor,
    bias: &TchTensor,
    options: &ConvOptions<2>,
) -> Option<ConvShape> {
    let all_f32_on_cpu = [x, weight, bias].iter().all(|tensor| {
        tensor.tensor.device() == tch::Device::Cpu && tensor.tensor.kind() == tch::Kind::Float
    });
    if !all_f32_on_cpu || options.groups != 1 || options.is_asymmetric() {
        return None;
    }
    let dims4 = |tensor: &TchTensor| -> Option<[usize; 4]> {
        let dims: Vec<usize> = tensor
            .tensor
            .size()
            .into_iter()
            .map(|dim| usize::try_from(dim).ok())
            .collect::<Option<_>>()?;
        <[usize; 4]>::try_from(dims).ok()
    };
    let shape = ConvShape::new(
        dims4(x)?,
        dims4(weight)?,
        options.stride,
        options.padding_begin(),
        options.dilation,
    )
    .ok()?;
    (bias.tensor.size() == [shape.channels_out as i64]).then_some(shape)
}

/// An f32 CPU tensor's values in row-major order: libtorch's own memory when the tensor is
/// contiguous, else a contiguous copy that this value owns.
struct HostValues {
    contiguous: tch::Tensor,
}

impl HostValues {
    fn of(tensor: &tch::Tensor) -> Self {
        debug_assert!(
            tensor.device() == tch::Device::Cpu && tensor.kind() == tch::Kind::Float,
            "host_shape admits f32 CPU tensors only"
        );
        // A handle on the same storage when already contiguous.
        HostValues {
            contiguous: tensor.contiguous(),
        }
    }

    fn values(&self) -> &[f32] {
        let len = self.contiguous.numel();
        if len == 0 {
            return &[];
        }
        let data = self.contiguous.data_ptr() as *const f32;
        // SAFETY: a contiguous f32 CPU tensor of `len` elements from `data_ptr` (its storage
        // offset included), whose storage `self` keeps alive. Nothing writes to it while it is
        // borrowed: a job's tensor work runs on its one thread, and burn-tch and the fused
        // optimizer write in place only into storage no other handle shares (`can_mut`),
        // which this one is not while the convolution's own handles live.
        unsafe { std::slice::from_raw_parts(data, len) }
    }
}

/// The convolution's output, computed on the host into a fresh libtorch tensor.
pub fn forward(
    shape: &ConvShape,
    x: &TchTensor,
    weight: &TchTensor,
    bias: &TchTensor,
) -> TchTensor {
    let dims = shape.output_dims().map(|dim| dim as i64);
    let output = tch::Tensor::empty(dims, (tch::Kind::Float, tch::Device::Cpu));
    let len = output.numel();
    if len > 0 {
        let data = output.data_ptr() as *mut f32;
        // SAFETY: a fresh contiguous f32 CPU tensor of `len` elements, referenced by no other
        // handle, borrowed mutably while `output` lives; `conv2d_forward_into` writes every
        // element, so its uninitialised contents are never read.
        let values = unsafe { std::slice::from_raw_parts_mut(data, len) };
        conv2d_forward_into(
            shape,
            HostValues::of(&x.tensor).values(),
            HostValues::of(&weight.tensor).values(),
            Some(HostValues::of(&bias.tensor).values()),
            values,
        );
    }
    TchTensor::new(output)
}

/// The backward step of one host convolution on libtorch.
#[derive(Debug)]
pub struct HostConvolution;

/// What the backward reads: Burn's handles of the input and weight (while they live, burn-tch
/// sees those buffers as shared and never updates them in place, so these are the values the
/// forward saw) and the shape.
#[derive(Debug, Clone)]
pub struct SavedHostConvolution {
    pub x: TchTensor,
    pub weight: TchTensor,
    pub shape: ConvShape,
}

impl Backward<LibTorch, 3> for HostConvolution {
    type State = SavedHostConvolution;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<LibTorch>(&ops.node);
        let SavedHostConvolution { x, weight, shape } = ops.state;
        let wanted = [node_x.is_some(), node_weight.is_some(), node_bias.is_some()];
        let gradients = conv2d_backward(
            &shape,
            HostValues::of(&x.tensor).values(),
            HostValues::of(&weight.tensor).values(),
            HostValues::of(&grad.tensor).values(),
            wanted,
        );
        let registrations = [
            (node_x, gradients.input, shape.batch_input_dims()),
            (node_weight, gradients.weight, shape.weight_dims()),
            (node_bias, gradients.bias, vec![shape.channels_out]),
        ];
        for (node, gradient, dims) in registrations {
            if let (Some(node), Some(gradient)) = (node, gradient) {
                let dims: Vec<i64> = dims.into_iter().map(|dim| dim as i64).collect();
                let tensor = tch::Tensor::from_slice(&gradient).view(dims.as_slice());
                grads.register::<LibTorch>(node.id, TchTensor::new(tensor));
            }
        }
    }
}
