//! The flex backend's convolution: [`super::conv_host`]'s batched matrix products on flex's
//! host memory, forward (inference) and as one autodiff node whose backward computes the three
//! gradients together ([`super::conv_host_node`]).
//!
//! Where the convolution is not one it takes (another float type than f32, groups, a shape
//! [`ConvShape`] refuses), it is Burn's `conv2d` on flex, unchanged.

use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::TensorData;

use super::conv::ConvolutionBackend;
use super::conv_host::{ConvShape, conv2d_forward};
use super::conv_host_node::{HostMemoryBackend, host_convolution, host_shape};

impl ConvolutionBackend for Flex {
    fn conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match host_shape::<Flex>(&x, &weight, &bias, &options) {
            Some(shape) => Flex::host_forward(&shape, &x, &weight, &bias),
            None => Flex::conv2d(x, weight, Some(bias), options),
        }
    }
}

impl<C: CheckpointStrategy> ConvolutionBackend for Autodiff<Flex, C> {
    fn conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match host_shape::<Flex>(
            x.primitive(),
            weight.primitive(),
            bias.primitive(),
            &options,
        ) {
            Some(shape) => host_convolution::<Flex, C>(shape, x, weight, bias),
            // Burn's own differentiable convolution.
            None => <Self as ModuleOps<Self>>::conv2d(x, weight, Some(bias), options),
        }
    }
}

impl HostMemoryBackend for Flex {
    type HostValues<'a> = Cow<'a, [f32]>;

    fn in_host_memory(_tensor: &FlexTensor) -> bool {
        true
    }

    /// Borrowed when the tensor's layout is one contiguous block (at any offset), else copied
    /// out in order.
    fn host_values(tensor: &FlexTensor) -> Cow<'_, [f32]> {
        if let Some(values) = tensor.as_slice::<f32>() {
            return Cow::Borrowed(values);
        }
        let contiguous = tensor.to_contiguous();
        let values = contiguous
            .as_slice::<f32>()
            .expect("to_contiguous gives one contiguous block of f32");
        Cow::Owned(values.to_vec())
    }

    fn from_host_values(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, dims.to_vec()))
    }

    fn host_forward(
        shape: &ConvShape,
        x: &FlexTensor,
        weight: &FlexTensor,
        bias: &FlexTensor,
    ) -> FlexTensor {
        let output = conv2d_forward(
            shape,
            &Flex::host_values(x),
            &Flex::host_values(weight),
            Some(&Flex::host_values(bias)),
        );
        Flex::from_host_values(output, &shape.output_dims())
    }
}
