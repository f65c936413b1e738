//! Autodiff on libtorch: the convolution is recorded in libtorch's own autograd, and its
//! backward is ATen's `convolution_backward` (oneDNN on the CPU, cuDNN on a GPU), the kernels
//! PyTorch itself runs. Where [`ConvolutionGradients`] says Burn's formulas are faster (large
//! batches on the CPU), it is Burn's differentiable `conv2d` instead.
//!
//! Forward: the input, weight and bias are detached views of Burn's tensors (same storage, no
//! copy). The ones whose gradient Burn tracks are marked as requiring one, the convolution
//! runs on them with libtorch recording it, and Burn receives the output detached, so nothing
//! downstream is recorded by libtorch. Backward: one `run_backward` of `sum(output · grad)`
//! returns the gradients of exactly the tracked inputs, which go back into Burn's graph.
//!
//! Burn's copy-on-write bookkeeping must see that libtorch still reads the input and weight
//! until the backward: the recorded state keeps Burn's handles of both, so burn-tch never
//! updates them in place meanwhile (libtorch would refuse the backward if it did).
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, LibTorch};

use super::conv::{ConvolutionBackend, ConvolutionGradients};

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
        let tracked = [x.is_tracked(), weight.is_tracked(), bias.is_tracked()];
        let prepared = AtenConvolution
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let x = x.into_primitive();
        let weight = weight.into_primitive();
        let bias = bias.into_primitive();
        match prepared {
            OpsKind::Tracked(prep) => {
                let (output, recorded) =
                    RecordedConvolution::run(x, weight, bias, &options, tracked);
                prep.finish(recorded, output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(LibTorch::conv2d(x, weight, Some(bias), options))
            }
        }
    }
}

/// The backward step of one recorded convolution.
#[derive(Debug)]
struct AtenConvolution;

impl Backward<LibTorch, 3> for AtenConvolution {
    type State = RecordedConvolution;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<LibTorch>(&ops.node);
        let wanted = [node_x.is_some(), node_weight.is_some(), node_bias.is_some()];
        let [grad_x, grad_weight, grad_bias] = ops.state.gradients(grad, wanted);
        let registrations = [
            (node_x, grad_x),
            (node_weight, grad_weight),
            (node_bias, grad_bias),
        ];
        for (node, gradient) in registrations {
            if let (Some(node), Some(gradient)) = (node, gradient) {
                grads.register::<LibTorch>(node.id, gradient);
            }
        }
    }
}

/// What libtorch recorded of one convolution, until its backward takes it.
///
/// Burn's graph needs its state to be `Clone`; the recording is shared and taken once.
#[derive(Clone)]
pub struct RecordedConvolution {
    recording: Arc<Mutex<Option<Recording>>>,
}

struct Recording {
    /// The output with libtorch's graph behind it.
    output: tch::Tensor,
    /// The detached inputs, in the order x, weight, bias; `Some` where a gradient is tracked.
    leaves: [Option<tch::Tensor>; 3],
    /// Burn's handles of the input and weight: while they live, burn-tch sees the buffers as
    /// shared and does not write into them (see the module's notes).
    _burn_handles: [TchTensor; 2],
}

impl std::fmt::Debug for RecordedConvolution {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let taken = self
            .recording
            .lock()
            .map(|recording| recording.is_none())
            .unwrap_or(true);
        formatter
            .debug_struct("RecordedConvolution")
            .field("taken", &taken)
            .finish()
    }
}

impl RecordedConvolution {
    /// Runs the convolution with libtorch recording it for the `tracked` inputs.
    fn run(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        options: &ConvOptions<2>,
        tracked: [bool; 3],
    ) -> (TchTensor, Self) {
        debug_assert!(
            !options.is_asymmetric(),
            "conv2d() passes symmetric padding only"
        );
        let leaf = |tensor: &tch::Tensor, tracked: bool| {
            let detached = tensor.detach();
            if tracked {
                detached.set_requires_grad(true)
            } else {
                detached
            }
        };
        let x_leaf = leaf(&x.tensor, tracked[0]);
        let weight_leaf = leaf(&weight.tensor, tracked[1]);
        let bias_leaf = leaf(&bias.tensor, tracked[2]);
        let as_i64 = |values: [usize; 2]| values.map(|value| value as i64);
        // Recording needs libtorch's grad mode on, whatever the thread had it set to.
        let recorded_output = tch::with_grad(|| {
            tch::Tensor::conv2d(
                &x_leaf,
                &weight_leaf,
                Some(&bias_leaf),
                as_i64(options.stride),
                as_i64(options.padding_begin()),
                as_i64(options.dilation),
                options.groups as i64,
            )
        });
        let output = TchTensor::new(recorded_output.detach());
        let keep_if = |tensor: tch::Tensor, tracked: bool| tracked.then_some(tensor);
        let recording = Recording {
            output: recorded_output,
            leaves: [
                keep_if(x_leaf, tracked[0]),
                keep_if(weight_leaf, tracked[1]),
                keep_if(bias_leaf, tracked[2]),
            ],
            _burn_handles: [x, weight],
        };
        let recorded = RecordedConvolution {
            recording: Arc::new(Mutex::new(Some(recording))),
        };
        (output, recorded)
    }

    /// The gradients of x, weight and bias for the output gradient `grad`, where `wanted`.
    fn gradients(self, grad: TchTensor, wanted: [bool; 3]) -> [Option<TchTensor>; 3] {
        let recording = self
            .recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .expect("a recorded convolution is differentiated once");
        let Recording { output, leaves, .. } = recording;
        let mut inputs = Vec::with_capacity(3);
        let mut positions = Vec::with_capacity(3);
        for (position, leaf) in leaves.iter().enumerate() {
            if let (Some(leaf), true) = (leaf, wanted[position]) {
                inputs.push(leaf);
                positions.push(position);
            }
        }
        let mut gradients = [None, None, None];
        if inputs.is_empty() {
            return gradients;
        }
        // d/d(inputs) of sum(output · grad) is the vector-Jacobian product with `grad`.
        let computed = tch::with_grad(|| {
            let root = (&output * &grad.tensor).sum(output.kind());
            tch::Tensor::run_backward(&[root], &inputs, false, false)
        });
        for (position, gradient) in positions.into_iter().zip(computed) {
            gradients[position] = Some(TchTensor::new(gradient));
        }
        gradients
    }
}
