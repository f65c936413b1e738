//! ndhtl's host convolution ([`super::conv_host`]) as one autodiff node whose backward computes
//! the three gradients together, for every backend whose tensors it reads in host memory:
//! flex (`super::conv_flex`) and libtorch's CPU (`super::conv_torch_host`).
//!
//! A backend says how to read and build its tensors ([`HostMemoryBackend`]); the node, its
//! saved state and the registration of the gradients are written once here.

use std::ops::Deref;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, TensorMetadata};
use burn::tensor::DType;

use super::conv_host::{ConvShape, conv2d_backward};

/// A backend whose f32 tensors [`super::conv_host`] reads and writes in host memory.
pub trait HostMemoryBackend: Backend {
    /// A tensor's values, f32, row-major: borrowed where the backend's memory allows.
    type HostValues<'a>: Deref<Target = [f32]>;

    /// Whether this tensor's values are in host memory (on libtorch: on the CPU).
    fn in_host_memory(tensor: &FloatTensor<Self>) -> bool;

    /// The values of a tensor [`host_shape`] admitted.
    fn host_values(tensor: &FloatTensor<Self>) -> Self::HostValues<'_>;

    /// A tensor of these values, row-major, of these dimensions.
    fn from_host_values(values: Vec<f32>, dims: &[usize]) -> FloatTensor<Self>;

    /// The convolution's output, computed on the host.
    fn host_forward(
        shape: &ConvShape,
        x: &FloatTensor<Self>,
        weight: &FloatTensor<Self>,
        bias: &FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// The host shape of this convolution, when the host convolution takes it: f32 tensors in host
/// memory, one group, symmetric padding, a shape [`ConvShape`] admits, a bias per output
/// channel. `None` sends the caller to the backend's own convolution.
pub fn host_shape<B: HostMemoryBackend>(
    x: &FloatTensor<B>,
    weight: &FloatTensor<B>,
    bias: &FloatTensor<B>,
    options: &ConvOptions<2>,
) -> Option<ConvShape> {
    let admitted = [x, weight, bias]
        .iter()
        .all(|tensor| tensor.dtype() == DType::F32 && B::in_host_memory(tensor));
    if !admitted || options.groups != 1 || options.is_asymmetric() {
        return None;
    }
    let dims4 = |tensor: &FloatTensor<B>| <[usize; 4]>::try_from(tensor.shape().as_slice()).ok();
    let shape = ConvShape::new(
        dims4(x)?,
        dims4(weight)?,
        options.stride,
        options.padding_begin(),
        options.dilation,
    )
    .ok()?;
    (bias.shape().as_slice() == [shape.channels_out]).then_some(shape)
}

/// The host convolution of `shape` (from [`host_shape`]), recorded as one
/// node: its backward computes the gradients of exactly the tracked inputs in one pass.
pub fn host_convolution<B: HostMemoryBackend, C: CheckpointStrategy>(
    shape: ConvShape,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = <HostConvolution as Backward<B, 3>>::prepare::<C>(
        HostConvolution,
        [x.node(), weight.node(), bias.node()],
    )
    .compute_bound()
    .stateful();
    let x = x.into_primitive();
    let weight = weight.into_primitive();
    let bias = bias.into_primitive();
    let output = B::host_forward(&shape, &x, &weight, &bias);
    match prepared {
        OpsKind::Tracked(prep) => prep.finish(SavedHostConvolution { x, weight, shape }, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// Registers each gradient that was computed with the node it belongs to, in the order input,
/// weight, bias. Shared with libtorch's ATen convolution node (`super::conv_torch`).
pub fn register_convolution_gradients<B: Backend>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; 3],
    gradients: [Option<FloatTensor<B>>; 3],
) {
    for (parent, gradient) in parents.into_iter().zip(gradients) {
        if let (Some(parent), Some(gradient)) = (parent, gradient) {
            grads.register::<B>(parent, gradient);
        }
    }
}

/// The backward step of one host convolution.
#[derive(Debug)]
struct HostConvolution;

/// What the backward reads: the backend's handles of the input and weight, and the shape.
/// Neither backend updates a buffer in place while another handle shares it (flex never does;
/// burn-tch only where `can_mut`), so these are the values the forward saw.
#[derive(Debug, Clone)]
struct SavedHostConvolution<B: Backend> {
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    shape: ConvShape,
}

impl<B: HostMemoryBackend> Backward<B, 3> for HostConvolution {
    type State = SavedHostConvolution<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let parents = ops.parents.map(|parent| parent.map(|node| node.id));
        let grad = grads.consume::<B>(&ops.node);
        let SavedHostConvolution { x, weight, shape } = ops.state;
        let gradients = conv2d_backward(
            &shape,
            &B::host_values(&x),
            &B::host_values(&weight),
            &B::host_values(&grad),
            parents.map(|parent| parent.is_some()),
        );
        let to_tensor = |values: Option<Vec<f32>>, dims: &[usize]| {
            values.map(|values| B::from_host_values(values, dims))
        };
        let tensors = [
            to_tensor(gradients.input, &shape.batch_input_dims()),
            to_tensor(gradients.weight, &shape.weight_dims()),
            to_tensor(gradients.bias, &[shape.channels_out]),
        ];
        register_convolution_gradients::<B>(grads, parents, tensors);
    }
}
