//! A lifetime's training metrics (mean loss, top-1, mean modulator), gathered without work in
//! the step.
//!
//! At batch 1 a GPU step is launch-bound, so every operator the loop adds to a step costs about
//! as much as one of the model's. Reducing each step's loss and hits as the step came cost 8
//! operator calls per STL step and 10 per NDHTL step (the loss scaled and summed; argmax,
//! comparison, conversion, sum and a running sum for the hits; the modulator's mean and its
//! sum): 17 % more than the bare STL step's 48 (op census, README "Benchmark"). Here a step only
//! keeps its loss, logits and targets, without their autodiff association (no kernel), and every
//! [`STEPS_PER_REDUCTION`] steps one concatenation per quantity reduces them all at once: about
//! 13 calls per reduction. The values kept are small (a loss per step, B×C logits), and no step
//! waits for the device: only [`StepMetrics::finish`] reads back, once per lifetime.

use burn::tensor::kind::Numeric;
use burn::tensor::{Int, Tensor};

use crate::model::loss::top_k_hits;

/// Steps whose metrics are reduced together. At batch 128 and 100 classes the logits held
/// between reductions are 13 MB.
pub const STEPS_PER_REDUCTION: usize = 256;

/// The metrics of a lifetime's training steps, as [`TrainTotals`](super::lifetime::TrainTotals)
/// reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTotals {
    pub steps: usize,
    pub images: usize,
    /// Mean training loss per image: each step's loss weighted by its batch's size.
    pub loss: f64,
    /// Percent of images whose largest logit is the target's.
    pub top1: f64,
    /// Mean over steps of the step's batch-mean modulator m (NDHTL only).
    pub modulator_mean: Option<f64>,
}

/// Running metrics of a lifetime's steps, kept on the device (on its backend without autodiff).
pub struct StepMetrics {
    /// The loop's batch size: each pending loss is in units of a full batch's mean.
    batch_size: usize,
    pending_losses: Vec<Tensor<1>>,
    pending_logits: Vec<Tensor<2>>,
    pending_targets: Vec<Tensor<1, Int>>,
    pending_modulators: Vec<Tensor<1>>,
    /// Σ over reduced steps of loss × size / batch_size.
    loss_sum: Option<Tensor<1>>,
    hits: Option<Tensor<1, Int>>,
    modulator_sum: Option<Tensor<1>>,
    steps: usize,
    images: usize,
}

impl StepMetrics {
    pub fn new(batch_size: usize) -> Self {
        debug_assert!(batch_size > 0, "a batch holds at least one image");
        StepMetrics {
            batch_size,
            pending_losses: Vec::with_capacity(STEPS_PER_REDUCTION),
            pending_logits: Vec::with_capacity(STEPS_PER_REDUCTION),
            pending_targets: Vec::with_capacity(STEPS_PER_REDUCTION),
            pending_modulators: Vec::new(),
            loss_sum: None,
            hits: None,
            modulator_sum: None,
            steps: 0,
            images: 0,
        }
    }

    /// One step: its batch-mean `loss`, its `logits` (B×C) and `targets` (B), and for NDHTL its
    /// modulator m (B×1). Each is kept without its autodiff association, so the pending values
    /// neither hold a graph node nor pay autodiff dispatch when reduced; nothing is computed unless
    /// the batch is partial (the loss is scaled) or larger than one image with a modulator (its
    /// mean).
    pub fn record(
        &mut self,
        loss: Tensor<1>,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
        modulator: Option<Tensor<2>>,
    ) {
        let [size, _] = logits.dims();
        debug_assert_eq!(targets.dims(), [size], "one target per row of logits");
        debug_assert!(size <= self.batch_size, "a batch is at most the batch size");
        let loss = loss.without_autodiff();
        self.pending_losses.push(if size == self.batch_size {
            loss
        } else {
            loss.mul_scalar(size as f32 / self.batch_size as f32)
        });
        self.pending_logits.push(logits.without_autodiff());
        self.pending_targets.push(targets.without_autodiff());
        if let Some(modulator) = modulator {
            let modulator = modulator.without_autodiff();
            // At batch 1 the batch mean is the value itself: a view, no kernel.
            self.pending_modulators.push(if size == 1 {
                modulator.reshape([1])
            } else {
                modulator.mean()
            });
        }
        debug_assert!(
            self.pending_modulators.is_empty()
                || self.pending_modulators.len() == self.pending_losses.len(),
            "every step of a lifetime has a modulator, or none has"
        );
        self.steps += 1;
        self.images += size;
        if self.pending_losses.len() == STEPS_PER_REDUCTION {
            self.reduce_pending();
        }
    }

    /// Reduces the pending steps into the running sums: one concatenation per quantity.
    fn reduce_pending(&mut self) {
        if self.pending_losses.is_empty() {
            return;
        }
        let losses = Tensor::cat(std::mem::take(&mut self.pending_losses), 0).sum();
        self.loss_sum = Some(add_to(self.loss_sum.take(), losses));
        let logits = Tensor::cat(std::mem::take(&mut self.pending_logits), 0);
        let targets = Tensor::cat(std::mem::take(&mut self.pending_targets), 0);
        let hits = top_k_hits(logits, targets, 1);
        self.hits = Some(add_to(self.hits.take(), hits));
        if !self.pending_modulators.is_empty() {
            let modulators = Tensor::cat(std::mem::take(&mut self.pending_modulators), 0).sum();
            self.modulator_sum = Some(add_to(self.modulator_sum.take(), modulators));
        }
    }

    /// The lifetime's totals: the one read from the device.
    pub fn finish(mut self) -> StepTotals {
        self.reduce_pending();
        let images = self.images.max(1) as f64;
        let loss = self
            .loss_sum
            .map(|sum| sum.into_scalar::<f32>() as f64 * self.batch_size as f64 / images)
            .unwrap_or(f64::NAN);
        let hits = self
            .hits
            .map(|hits| hits.into_scalar::<i64>() as f64)
            .unwrap_or(0.0);
        let modulator_mean = self
            .modulator_sum
            .map(|sum| sum.into_scalar::<f32>() as f64 / self.steps.max(1) as f64);
        StepTotals {
            steps: self.steps,
            images: self.images,
            loss,
            top1: 100.0 * hits / images,
            modulator_mean,
        }
    }
}

/// `sum + value`, or `value` when nothing was summed yet.
fn add_to<K: Numeric>(sum: Option<Tensor<1, K>>, value: Tensor<1, K>) -> Tensor<1, K> {
    match sum {
        Some(sum) => sum + value,
        None => value,
    }
}
