//! The flex backend's convolution: [`super::conv_host`]'s batched matrix products on flex's
//! host memory, forward (inference) and as one autodiff node whose backward computes the three
//! gradients together.
//!
//! Where the convolution is not one it takes (another float type than f32, groups, a shape
//! [`ConvShape`] refuses), it is Burn's `conv2d` on flex, unchanged.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, TensorData};

use super::conv::ConvolutionBackend;
use super::conv_host::{ConvShape, conv2d_backward, conv2d_forward};

impl ConvolutionBackend for Flex {
    fn conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match host_shape(&x, &weight, &bias, &options) {
            Some(shape) => forward(&shape, &x, &weight, &bias),
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
        let Some(shape) = host_shape(
            x.primitive(),
            weight.primitive(),
            bias.primitive(),
            &options,
        ) else {
            // Burn's own differentiable convolution.
            return <Self as ModuleOps<Self>>::conv2d(x, weight, Some(bias), options);
        };
        let prepared = HostConvolution
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let x = x.into_primitive();
        let weight = weight.into_primitive();
        let bias = bias.into_primitive();
        let output = forward(&shape, &x, &weight, &bias);
        match prepared {
            OpsKind::Tracked(prep) => prep.finish(SavedConvolution { x, weight, shape }, output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}

/// The host shape of this convolution, when [`super::conv_host`] takes it: f32 tensors, one
/// group, symmetric padding.
fn host_shape(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<ConvShape> {
    let all_f32 = [x, weight, bias]
        .iter()
        .all(|tensor| tensor.dtype() == DType::F32);
    if !all_f32 || options.groups != 1 || options.is_asymmetric() {
        return None;
    }
    let dims4 = |tensor: &FlexTensor| <[usize; 4]>::try_from(tensor.layout().shape().to_vec()).ok();
    let shape = ConvShape::new(
        dims4(x)?,
        dims4(weight)?,
        options.stride,
        options.padding_begin(),
        options.dilation,
    )
    .ok()?;
    (bias.layout().shape().to_vec() == [shape.channels_out]).then_some(shape)
}

/// A flex tensor's values, f32, in row-major order: borrowed when its layout is one contiguous
/// block (at any offset), else copied out in order.
fn host_values(tensor: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    if let Some(values) = tensor.as_slice::<f32>() {
        return std::borrow::Cow::Borrowed(values);
    }
    let contiguous = tensor.to_contiguous();
    let values = contiguous
        .as_slice::<f32>()
        .expect("to_contiguous gives one contiguous block of f32");
    std::borrow::Cow::Owned(values.to_vec())
}

fn forward(
    shape: &ConvShape,
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
) -> FlexTensor {
    let output = conv2d_forward(
        shape,
        &host_values(x),
        &host_values(weight),
        Some(&host_values(bias)),
    );
    FlexTensor::from_data(TensorData::new(output, shape.output_dims()))
}

/// The backward step of one convolution.
#[derive(Debug)]
struct HostConvolution;

/// What the backward reads: flex's handles of the input and weight (flex never changes a
/// shared buffer in place, so these are the values the forward saw) and the shape.
#[derive(Debug, Clone)]
struct SavedConvolution {
    x: FlexTensor,
    weight: FlexTensor,
    shape: ConvShape,
}

impl Backward<Flex, 3> for HostConvolution {
    type State = SavedConvolution;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let SavedConvolution { x, weight, shape } = ops.state;
        let wanted = [node_x.is_some(), node_weight.is_some(), node_bias.is_some()];
        let gradients = conv2d_backward(
            &shape,
            &host_values(&x),
            &host_values(&weight),
            &host_values(&grad),
            wanted,
        );
        let registrations = [
            (node_x, gradients.input, shape.batch_input_dims()),
            (node_weight, gradients.weight, shape.weight_dims()),
            (node_bias, gradients.bias, vec![shape.channels_out]),
        ];
        for (node, gradient, dims) in registrations {
            if let (Some(node), Some(gradient)) = (node, gradient) {
                grads.register::<Flex>(
                    node.id,
                    FlexTensor::from_data(TensorData::new(gradient, dims)),
                );
            }
        }
    }
}
