//! Losses and accuracy on logits.

use burn::tensor::activation;
use burn::tensor::{Int, Tensor};

use super::cross_entropy::{LossReduction, cross_entropy_loss};
use super::softmax::{SoftmaxKernels, softmax};

pub use ndhtl_core::plastic::LossKind;

/// Cross-entropy reduced as `reduction` says: one graph node ([`cross_entropy_loss`]), or
/// Burn's chain of nodes when `NDHTL_SOFTMAX=burn` asks for Burn's composites.
fn cross_entropy_reduced(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    reduction: LossReduction,
) -> Tensor<1> {
    if SoftmaxKernels::current() == SoftmaxKernels::Burn {
        return burns_cross_entropy(logits, targets, reduction);
    }
    cross_entropy_loss(logits, targets, reduction)
}

/// Burn's cross-entropy, a chain of nodes: log-softmax, gather, negation, then the reduction.
pub fn burns_cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    reduction: LossReduction,
) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let per_sample = activation::log_softmax(logits, 1)
        .gather(1, targets.reshape([batch, 1]))
        .reshape([batch])
        .neg();
    match reduction {
        LossReduction::PerSample => per_sample,
        LossReduction::Mean => per_sample.mean(),
        LossReduction::Sum => per_sample.sum(),
    }
}

/// Batch-mean cross-entropy, `1`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    cross_entropy_reduced(logits, targets, LossReduction::Mean)
}

/// Batch-sum cross-entropy, `1`.
pub fn cross_entropy_sum(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    cross_entropy_reduced(logits, targets, LossReduction::Sum)
}

/// Mean element-wise binary cross-entropy of softmax(Z) against one-hot targets. Logs are
/// clamped at −100 as in PyTorch's `BCELoss`.
pub fn binary_cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [_, classes] = logits.dims();
    let probabilities = softmax(logits, 1);
    let one_hot: Tensor<2> = targets.one_hot::<2>(classes).float();
    let log_p = probabilities.clone().log().clamp_min(-100.0);
    let log_not_p = probabilities.neg().add_scalar(1.0).log().clamp_min(-100.0);
    (one_hot.clone() * log_p + one_hot.neg().add_scalar(1.0) * log_not_p)
        .mean()
        .neg()
}

/// The training loss of one step.
pub fn training_loss(kind: LossKind, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    match kind {
        LossKind::Ce => cross_entropy(logits, targets),
        LossKind::Bce => binary_cross_entropy(logits, targets),
    }
}

/// Number of samples whose target is among the `k` largest logits, as a 1-element tensor
/// (kept on the device so the training loop need not synchronise every step).
pub fn top_k_hits(logits: Tensor<2>, targets: Tensor<1, Int>, k: usize) -> Tensor<1, Int> {
    let [batch, classes] = logits.dims();
    let k = k.min(classes);
    let targets = targets.reshape([batch, 1]);
    if k == 1 {
        return logits.argmax(1).equal(targets).int().sum();
    }
    let (_, top) = logits.topk_with_indices(k, 1);
    top.equal(targets.expand([batch, k])).int().sum()
}
