//! libtorch's CPU tensors through ndhtl's batched host convolution ([`super::conv_host`]), the
//! kernels flex runs: forward (inference) and as one autodiff node whose backward computes the
//! three gradients together.
//!
//! On the CPU the host convolution reads libtorch's memory in place (a copy only of a strided
//! input) and writes the forward's output straight into a fresh libtorch tensor. Measured on the
//! 2-core CPU (README, "Benchmark", rows `*_aten_conv`), it is faster than ATen's convolution
//! (oneDNN) and its backward at batch 1, where a step is nearly all convolution.
//!
//! The autodiff node is [`super::conv_host_node`]'s, shared with flex. Where the convolution is
//! not one it takes (a GPU tensor, another float type than f32, groups, a shape [`ConvShape`]
//! refuses), [`super::conv_host_node::host_shape`] says so and the caller takes libtorch's own
//! (`super::conv_torch`).
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use std::ops::Deref;

use burn::backend::LibTorch;
use burn::backend::libtorch::TchTensor;

use super::conv_host::{ConvShape, conv2d_forward_into};
use super::conv_host_node::HostMemoryBackend;

impl HostMemoryBackend for LibTorch {
    type HostValues<'a> = HostValues;

    fn in_host_memory(tensor: &TchTensor) -> bool {
        tensor.tensor.device() == tch::Device::Cpu
    }

    fn host_values(tensor: &TchTensor) -> HostValues {
        HostValues::of(&tensor.tensor)
    }

    fn from_host_values(values: Vec<f32>, dims: &[usize]) -> TchTensor {
        let dims: Vec<i64> = dims.iter().map(|&dim| dim as i64).collect();
        TchTensor::new(tch::Tensor::from_slice(&values).view(dims.as_slice()))
    }

    /// Written straight into a fresh libtorch tensor.
    fn host_forward(
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
            // SAFETY: a fresh contiguous f32 CPU tensor of `len` elements, referenced by no
            // other handle, borrowed mutably while `output` lives; `conv2d_forward_into` writes
            // every element, so its uninitialised contents are never read.
            let values = unsafe { std::slice::from_raw_parts_mut(data, len) };
            conv2d_forward_into(
                shape,
                &HostValues::of(&x.tensor),
                &HostValues::of(&weight.tensor),
                Some(&HostValues::of(&bias.tensor)),
                values,
            );
        }
        TchTensor::new(output)
    }
}

/// An f32 CPU tensor's values in row-major order: libtorch's own memory when the tensor is
/// contiguous, else a contiguous copy that this value owns.
pub struct HostValues {
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
}

impl Deref for HostValues {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
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
