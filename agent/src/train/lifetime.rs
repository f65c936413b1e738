//! One lifetime (epoch) of training, and evaluation. Shared by source training, STL and NDHTL.
//!
//! NDHTL (spec §4.2): the Hebbian update runs at every step; the step losses of a window of K
//! steps are accumulated on a graph kept through H and E; one backward pass and one SGD step end
//! the window; then H and E are detached and carry over. STL is the same loop with K = 1 and no
//! plastic state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};

use super::config::{KReduce, LossSteps, ResetPolicy};
use super::metrics::EvalMetrics;
use super::step_metrics::StepMetrics;
use crate::data::TaskImages;
use crate::data::pipeline::{Augmentation, EpochPlan, Normalization, Prefetcher, batch_count};
use crate::model::loss::{cross_entropy_sum, top_k_hits, training_loss};
use crate::model::{CifarAlexNet, HebbianState, LossKind, PlasticConfig, TraceMode};

/// A flag that stops a run at the next step; the last checkpoint stays valid.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Receives progress from a running job (the CLI's progress bar, an agent's metric stream).
pub trait TrainingObserver {
    /// After every step of a lifetime (`step` is 1-based).
    fn on_step(&mut self, _lifetime: usize, _step: usize, _steps: usize) {}
    /// After a lifetime's evaluation and checkpoint.
    fn on_lifetime(&mut self, _metrics: &super::metrics::LifetimeMetrics) {}
    /// Once, before training, with the lifetimes restored from a checkpoint.
    fn on_resume(&mut self, _history: &[super::metrics::LifetimeMetrics]) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl TrainingObserver for NoObserver {}

/// How the inner loop trains, derived from a source or fine-tune configuration.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub batch_size: usize,
    /// Steps per backward window (STL and source: 1; NDHTL: K).
    pub window: usize,
    pub loss: LossKind,
    pub loss_steps: LossSteps,
    pub k_reduce: KReduce,
    pub reset: ResetPolicy,
    /// Present for NDHTL.
    pub plastic: Option<PlasticConfig>,
    pub augmentation: Augmentation,
    /// Seed of the data order and augmentation.
    pub data_seed: u64,
}

impl LoopSettings {
    /// Per-sample traces need full batches (spec §3): the incomplete last batch is dropped.
    pub fn drop_last(&self) -> bool {
        matches!(
            self.plastic,
            Some(PlasticConfig {
                trace: TraceMode::PerSample,
                ..
            })
        )
    }

    /// Number of slots of the Hebbian state.
    pub fn hebbian_slots(&self) -> usize {
        match self.plastic {
            Some(PlasticConfig {
                trace: TraceMode::PerSample,
                ..
            }) => self.batch_size,
            _ => 1,
        }
    }

    pub fn steps_per_lifetime(&self, images: usize) -> usize {
        batch_count(images, self.batch_size, self.drop_last())
    }
}

/// Totals of one lifetime's training steps.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTotals {
    pub steps: usize,
    pub images: usize,
    pub backward_passes: usize,
    pub loss: f64,
    pub top1: f64,
    pub modulator_mean: Option<f64>,
    pub seconds: f64,
}

/// Stopped by a [`CancelToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the run was cancelled")]
pub struct Cancelled;

/// Turns a batch of pixels into an image tensor on `device`.
pub fn images_tensor(pixels: Vec<f32>, batch: usize, device: &Device) -> Tensor<4> {
    crate::upload::float_to_device(pixels, [batch, 3, 32, 32], device)
}

pub fn labels_tensor(labels: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let batch = labels.len();
    crate::upload::int_to_device(labels, [batch], device)
}

/// The model, optimizer and Hebbian state a lifetime updates.
pub struct TrainingState {
    pub model: CifarAlexNet,
    pub optimizer: ModuleOptimizer,
    pub hebbian: Option<HebbianState>,
}

/// Trains one lifetime (0-based `lifetime_index`) at learning rate `lr`.
#[allow(clippy::too_many_arguments)] // each input is distinct; a struct would only rename them
pub fn train_lifetime(
    state: TrainingState,
    settings: &LoopSettings,
    lifetime_index: usize,
    lr: f64,
    train: &Arc<TaskImages>,
    device: &Device,
    observer: &mut dyn TrainingObserver,
    cancel: &CancelToken,
) -> Result<(TrainingState, TrainTotals), Cancelled> {
    let TrainingState {
        mut model,
        mut optimizer,
        mut hebbian,
    } = state;
    let started = Instant::now();
    let plan = EpochPlan::new(
        train.len(),
        settings.data_seed,
        lifetime_index as u64,
        settings.augmentation,
        true,
    );
    let batches = Prefetcher::spawn(
        Arc::clone(train),
        plan,
        Normalization::CIFAR10,
        settings.batch_size,
        settings.drop_last(),
        0,
    );
    let steps = batches.batch_count;
    let num_classes = model.num_classes();
    if settings.reset == ResetPolicy::Lifetime && hebbian.is_some() {
        hebbian = Some(HebbianState::zeros(
            settings.hebbian_slots(),
            num_classes,
            device,
        ));
    }

    let mut window_loss: Option<Tensor<1>> = None;
    let mut steps_in_window = 0usize;
    let mut backward_passes = 0usize;
    let mut metrics = StepMetrics::new(settings.batch_size);

    for (step, batch) in batches.enumerate() {
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        let size = batch.size();
        let is_last = batch.is_last;
        let images = images_tensor(batch.pixels, size, device);
        let targets = labels_tensor(batch.labels, device);
        let features = model.features.forward(images);
        let (logits, modulator) = match (hebbian.take(), &settings.plastic) {
            (Some(trace), Some(plastic)) => {
                let output = model.plastic_step(features, trace, plastic);
                hebbian = Some(output.state);
                (output.logits, Some(output.modulator))
            }
            _ => (model.linear_logits(features), None),
        };
        let step_loss = training_loss(settings.loss, logits.clone(), targets.clone());
        metrics.record(step_loss.clone(), logits, targets, modulator);

        steps_in_window += 1;
        window_loss = Some(match (settings.loss_steps, window_loss.take()) {
            (LossSteps::All, Some(sum)) => sum + step_loss,
            _ => step_loss,
        });
        if steps_in_window == settings.window || is_last {
            let mut loss = window_loss
                .take()
                .expect("a window holds at least one step");
            if settings.k_reduce == KReduce::Mean && settings.loss_steps == LossSteps::All {
                loss = loss.div_scalar(steps_in_window as f32);
            }
            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            model = crate::train::optimizer::step_and_apply(&mut optimizer, lr, model, gradients);
            backward_passes += 1;
            steps_in_window = 0;
            hebbian = hebbian.map(|trace| match settings.reset {
                ResetPolicy::Episode => HebbianState::zeros(trace.slots(), num_classes, device),
                _ => trace.detach(),
            });
        }
        observer.on_step(lifetime_index + 1, step + 1, steps);
    }
    debug_assert!(
        window_loss.is_none(),
        "the last step always closes its window"
    );

    let step_totals = metrics.finish();
    debug_assert_eq!(step_totals.steps, steps, "every planned batch was trained");
    let totals = TrainTotals {
        steps,
        images: step_totals.images,
        backward_passes,
        loss: step_totals.loss,
        top1: step_totals.top1,
        modulator_mean: step_totals.modulator_mean,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((
        TrainingState {
            model,
            optimizer,
            hebbian,
        },
        totals,
    ))
}

/// Evaluates on `test` (no augmentation, file order). `hebb_eval` is NDHTL's frozen H; the
/// model must be the inference copy (`model.valid()`), on `device`. Batches are assembled on
/// the prefetch thread, as in training, so a GPU is not left idle while the CPU normalises the
/// next test image.
pub fn evaluate(
    model: &CifarAlexNet,
    hebb_eval: Option<Tensor<2>>,
    test: &Arc<TaskImages>,
    batch_size: usize,
    device: &Device,
) -> EvalMetrics {
    let batches = Prefetcher::spawn(
        Arc::clone(test),
        EpochPlan::sequential(test.len()),
        Normalization::CIFAR10,
        batch_size,
        false,
        0,
    );
    debug_assert_eq!(
        batches.batch_count,
        batch_count(test.len(), batch_size, false),
        "evaluation covers every test image"
    );
    let mut loss_sum: Option<Tensor<1>> = None;
    let mut top1: Option<Tensor<1, Int>> = None;
    let mut top5: Option<Tensor<1, Int>> = None;
    let mut evaluated = 0;
    for batch in batches {
        let size = batch.size();
        evaluated += size;
        let images = images_tensor(batch.pixels, size, device);
        let targets = labels_tensor(batch.labels, device);
        let features = model.features.forward(images);
        let logits = match &hebb_eval {
            Some(hebb) => model.plastic_eval_logits(features, hebb.clone()),
            None => model.linear_logits(features),
        };
        let batch_loss = cross_entropy_sum(logits.clone(), targets.clone());
        let hits1 = top_k_hits(logits.clone(), targets.clone(), 1);
        let hits5 = top_k_hits(logits, targets, 5);
        loss_sum = Some(loss_sum.map_or(batch_loss.clone(), |sum| sum + batch_loss));
        top1 = Some(top1.map_or(hits1.clone(), |sum| sum + hits1));
        top5 = Some(top5.map_or(hits5.clone(), |sum| sum + hits5));
    }
    debug_assert_eq!(evaluated, test.len(), "every test image evaluated once");
    let images = evaluated.max(1) as f64;
    EvalMetrics {
        loss: loss_sum
            .map(|t| t.into_scalar::<f32>() as f64)
            .unwrap_or(f64::NAN)
            / images,
        top1: 100.0 * top1.map(|t| t.into_scalar::<i64>() as f64).unwrap_or(0.0) / images,
        top5: 100.0 * top5.map(|t| t.into_scalar::<i64>() as f64).unwrap_or(0.0) / images,
        images: evaluated,
    }
}

/// The inference copy of a training model and its frozen H.
pub fn inference_view(
    model: &CifarAlexNet,
    hebbian: Option<&HebbianState>,
) -> (CifarAlexNet, Option<Tensor<2>>) {
    let inference = model.valid();
    let hebb_eval = hebbian.map(|state| state.eval_hebb().detach().inner());
    (inference, hebb_eval)
}
