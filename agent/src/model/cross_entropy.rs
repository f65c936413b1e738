//! Cross-entropy on logits as one graph node, with ATen's two loss kernels on libtorch.
//!
//! Burn 0.22 writes cross-entropy as a chain of nodes: log-softmax, a gather of the targets'
//! log-probabilities, a negation and a mean. Their backward is a seed of ones times `1/B`
//! (the mean), a negation, a tensor of zeros with a scatter-add into it (the gather), and the
//! log-softmax's backward: on libtorch about ten ATen operators per loss, each a kernel launch
//! on a GPU, where PyTorch's `cross_entropy` runs four kernels (log-softmax and `nll_loss`,
//! and their two backwards).
//!
//! Here it is one node. For log-probabilities `o = log_softmax(x)` and per-sample losses
//! `ℓᵢ = −o[i, tᵢ]`, reduced to their mean, their sum or kept per sample, with the output
//! gradient `g` spread to one weight per sample (`wᵢ = g/B`, `g` or `gᵢ`):
//!
//! ```text
//! dx[i, j] = wᵢ · (exp(o[i, j]) − [j = tᵢ])
//! ```
//!
//! - On libtorch the forward is ATen's `_log_softmax` and `nll_loss_forward`
//!   (`aten_ops.cpp`: tch does not bind the latter, whose total weight the backward needs),
//!   and the backward `nll_loss_backward` and `_log_softmax_backward_data`: PyTorch's own
//!   four kernels, so the same values as `torch.nn.functional.cross_entropy`.
//! - Elsewhere the forward is Burn's chain unchanged (the same values bit for bit) and the
//!   backward the formula above in four backend operations.
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::{IndexingUpdateOp, Int, Shape, Tensor};

/// How the per-sample losses are reduced (ATen's `Reduction`, with its codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReduction {
    /// One loss per sample, `B`.
    PerSample,
    /// Their mean, `1`.
    Mean,
    /// Their sum, `1`.
    Sum,
}

impl LossReduction {
    /// ATen's code (`at::Reduction`).
    pub fn aten_code(self) -> i64 {
        match self {
            LossReduction::PerSample => 0,
            LossReduction::Mean => 1,
            LossReduction::Sum => 2,
        }
    }
}

/// Cross-entropy of logits `B×C` against class indices `B`, and its backward. The default
/// bodies are Burn's forward and the formula above; libtorch replaces both, and autodiff
/// wires them into one node.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait CrossEntropyBackend: Backend {
    /// The loss, the log-probabilities and a tensor the backend's backward may need besides
    /// them: ATen's total weight on libtorch; elsewhere the loss itself, a shared handle that
    /// costs nothing and is not read.
    fn cross_entropy_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        reduction: LossReduction,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [batch, _] = two_dims(&logits.shape());
        let log_probs = Self::log_softmax(logits, 1);
        let column = Self::int_reshape(targets, Shape::new([batch, 1]));
        let picked = Self::float_gather(1, log_probs.clone(), column);
        let per_sample = Self::float_neg(Self::float_reshape(picked, Shape::new([batch])));
        let loss = match reduction {
            LossReduction::PerSample => per_sample,
            LossReduction::Mean => Self::float_mean(per_sample),
            LossReduction::Sum => Self::float_sum(per_sample),
        };
        (loss.clone(), log_probs, loss)
    }

    /// `dx[i, j] = wᵢ · (exp(o[i, j]) − [j = tᵢ])`, `o` the log-probabilities.
    fn cross_entropy_backward(
        grad: FloatTensor<Self>,
        log_probs: FloatTensor<Self>,
        targets: IntTensor<Self>,
        _saved: FloatTensor<Self>,
        reduction: LossReduction,
    ) -> FloatTensor<Self> {
        let [batch, _] = two_dims(&log_probs.shape());
        // One weight per sample, as a column (or a 1×1 that broadcasts over the batch).
        let weights = match reduction {
            LossReduction::PerSample => Self::float_reshape(grad, Shape::new([batch, 1])),
            // Burn's mean backward multiplies by 1/B, so this does too.
            LossReduction::Mean => Self::float_reshape(
                Self::float_mul_scalar(grad, (1.0 / batch as f64).into()),
                Shape::new([1, 1]),
            ),
            LossReduction::Sum => Self::float_reshape(grad, Shape::new([1, 1])),
        };
        let weighted = Self::float_mul(Self::float_exp(log_probs), weights.clone());
        let column = Self::int_reshape(targets, Shape::new([batch, 1]));
        let minus_weights = Self::float_expand(Self::float_neg(weights), Shape::new([batch, 1]));
        Self::float_scatter(1, weighted, column, minus_weights, IndexingUpdateOp::Add)
    }
}

fn two_dims(shape: &Shape) -> [usize; 2] {
    debug_assert_eq!(shape.num_dims(), 2, "cross-entropy of logits B×C");
    [shape[0], shape[1]]
}

impl CrossEntropyBackend for Flex {}

#[cfg(feature = "tch")]
impl CrossEntropyBackend for burn::backend::LibTorch {
    fn cross_entropy_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        reduction: LossReduction,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        use burn::backend::libtorch::TchTensor;
        let targets = long_targets(&targets.tensor);
        let [loss, log_probs, total_weight] = crate::aten_ops::cross_entropy_forward(
            &logits.tensor,
            &targets,
            reduction.aten_code(),
            IGNORE_NO_CLASS,
        )
        .unwrap_or_else(|error| panic!("cross-entropy forward: {error}"));
        // ATen reduces to a 0-d tensor; Burn's reductions are 1-element vectors.
        let loss = match reduction {
            LossReduction::PerSample => loss,
            LossReduction::Mean | LossReduction::Sum => loss.view([1]),
        };
        (
            TchTensor::new(loss),
            TchTensor::new(log_probs),
            TchTensor::new(total_weight),
        )
    }

    fn cross_entropy_backward(
        grad: FloatTensor<Self>,
        log_probs: FloatTensor<Self>,
        targets: IntTensor<Self>,
        saved: FloatTensor<Self>,
        reduction: LossReduction,
    ) -> FloatTensor<Self> {
        let targets = long_targets(&targets.tensor);
        let grad_output = match reduction {
            LossReduction::PerSample => grad.tensor.shallow_clone(),
            LossReduction::Mean | LossReduction::Sum => grad.tensor.view([] as [i64; 0]),
        };
        let tch_reduction = match reduction {
            LossReduction::PerSample => tch::Reduction::None,
            LossReduction::Mean => tch::Reduction::Mean,
            LossReduction::Sum => tch::Reduction::Sum,
        };
        // tch's receiver is ATen's `self`, the log-probabilities.
        let grad_log_probs = log_probs.tensor.nll_loss_backward(
            &grad_output,
            &targets,
            None::<tch::Tensor>,
            tch_reduction,
            IGNORE_NO_CLASS,
            &saved.tensor,
        );
        let kind = log_probs.tensor.kind();
        burn::backend::libtorch::TchTensor::new(tch::Tensor::internal_log_softmax_backward_data(
            &grad_log_probs,
            &log_probs.tensor,
            1,
            kind,
        ))
    }
}

/// ATen's `ignore_index`, for the forward and the backward alike: PyTorch's default, −100,
/// which no class index equals.
#[cfg(feature = "tch")]
const IGNORE_NO_CLASS: i64 = -100;

/// The class indices as ATen's loss kernels take them, `int64` (burn-tch's own int type, so
/// this is normally the same handle).
#[cfg(feature = "tch")]
fn long_targets(targets: &tch::Tensor) -> tch::Tensor {
    if targets.kind() == tch::Kind::Int64 {
        return targets.shallow_clone();
    }
    targets.to_kind(tch::Kind::Int64)
}

/// The cross-entropy node; its backward state is the log-probabilities, the targets, the
/// backend's saved tensor and the reduction.
#[derive(Debug, Clone, Copy)]
struct CrossEntropyStep;

impl<B: CrossEntropyBackend> Backward<B, 1> for CrossEntropyStep {
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>, LossReduction);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (log_probs, targets, saved, reduction) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::cross_entropy_backward(grad, log_probs, targets, saved, reduction)
        });
    }
}

impl<B: CrossEntropyBackend, C: CheckpointStrategy> CrossEntropyBackend for Autodiff<B, C> {
    fn cross_entropy_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        reduction: LossReduction,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Compute-bound: the log-probabilities are kept for the backward, not recomputed.
        match CrossEntropyStep
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (loss, log_probs, saved) =
                    B::cross_entropy_forward(logits.into_primitive(), targets.clone(), reduction);
                let loss =
                    prep.finish((log_probs.clone(), targets, saved.clone(), reduction), loss);
                // The other two outputs are constants of the graph (never differentiated).
                (loss, Self::from_inner(log_probs), Self::from_inner(saved))
            }
            OpsKind::UnTracked(prep) => {
                let (loss, log_probs, saved) =
                    B::cross_entropy_forward(logits.into_primitive(), targets, reduction);
                (
                    prep.finish(loss),
                    Self::from_inner(log_probs),
                    Self::from_inner(saved),
                )
            }
        }
    }
}

/// Cross-entropy of `logits` (`B×C`) against class indices `targets` (`B`), reduced as
/// `reduction` says: `B` values per sample, or 1. One graph node.
pub fn cross_entropy_loss(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    reduction: LossReduction,
) -> Tensor<1> {
    debug_assert_eq!(
        logits.dims()[0],
        targets.dims()[0],
        "a target per row of logits"
    );
    let (loss, _, _) = <Dispatch as CrossEntropyBackend>::cross_entropy_forward(
        logits.into_dispatch(),
        targets.into_dispatch(),
        reduction,
    );
    Tensor::from_dispatch(loss)
}
