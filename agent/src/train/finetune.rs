//! Running whole jobs: source training (spec §5.1) and STL/NDHTL fine-tuning (spec §5.2), with
//! a checkpoint after every lifetime and resume from the last one.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Tensor;

use super::checkpoint::{
    CheckpointError, Progress, config_fingerprint, load_checkpoint, save_checkpoint,
};
use super::config::{ConfigError, FinetuneConfig, Method, SourceConfig};
use super::lifetime::{
    CancelToken, Cancelled, LoopSettings, TrainingObserver, TrainingState, evaluate,
    inference_view, train_lifetime,
};
use super::metrics::{LifetimeMetrics, RunSummary};
use super::optimizer::build_optimizer;
use crate::data::pipeline::{Augmentation, stream_seed};
use crate::data::{DataError, TaskError, TaskImages, TaskSpec, read_dataset};
use crate::device::ComputeDevice;
use crate::model::io::ModelIoError;
use crate::model::{AlexNetFeatures, CifarAlexNet, HebbianState, PlasticParams, new_classifier};

/// Why a job failed. `is_retryable` tells a scheduler whether another attempt can succeed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ModelIoError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    #[error("training diverged at lifetime {lifetime}: the {what} is {value}")]
    Diverged {
        lifetime: usize,
        what: &'static str,
        value: f64,
    },
}

impl TrainError {
    /// Bad input and divergence fail the same way every time; I/O trouble may not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TrainError::Checkpoint(CheckpointError::Io { .. })
                | TrainError::Data(DataError::Io { .. })
                | TrainError::Cancelled(_)
        )
    }
}

/// A task's train and test images, ready for the pipeline.
#[derive(Debug, Clone)]
pub struct TaskData {
    pub task: TaskSpec,
    pub train: Arc<TaskImages>,
    pub test: Arc<TaskImages>,
}

impl TaskData {
    /// Reads the task's dataset under `data_root` and selects its classes.
    pub fn load(
        data_root: &Path,
        task: &TaskSpec,
        train_per_class: Option<usize>,
    ) -> Result<Self, TrainError> {
        let raw = read_dataset(data_root, task.dataset)?;
        let train = TaskImages::select(task, &raw.train, "train", train_per_class)?;
        let test = TaskImages::select(task, &raw.test, "test", None)?;
        tracing::info!(
            task = %task,
            dataset = %task.dataset,
            train_images = train.len(),
            test_images = test.len(),
            classes = task.num_classes(),
            "task data loaded"
        );
        Ok(TaskData {
            task: task.clone(),
            train: Arc::new(train),
            test: Arc::new(test),
        })
    }
}

/// The result of a finished run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub history: Vec<LifetimeMetrics>,
    pub summary: RunSummary,
    /// Lifetimes that came from a checkpoint rather than being trained by this call.
    pub resumed_lifetimes: usize,
}

fn check_finite(lifetime: usize, what: &'static str, value: f64) -> Result<(), TrainError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(TrainError::Diverged {
            lifetime,
            what,
            value,
        })
    }
}

fn write_metrics_file(run_dir: &Path, history: &[LifetimeMetrics]) -> Result<(), CheckpointError> {
    let path = run_dir.join("metrics.jsonl");
    let tmp = run_dir.join("metrics.jsonl.tmp");
    let io = |source| CheckpointError::Io {
        path: path.clone(),
        source,
    };
    let mut file = fs::File::create(&tmp).map_err(io)?;
    for metrics in history {
        let line = serde_json::to_string(metrics).expect("metrics serialise");
        writeln!(file, "{line}").map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)
}

/// The fine-tuning model: source features, a fresh head, and (NDHTL) the plastic parameters.
pub fn assemble_finetune_model(
    features: AlexNetFeatures,
    config: &FinetuneConfig,
    num_classes: usize,
    device: &burn::tensor::Device,
) -> CifarAlexNet {
    let features = if config.freeze_features {
        features.freeze()
    } else {
        features
    };
    let plastic = (config.method == Method::Ndhtl).then(|| {
        let mut plastic = PlasticParams::new(
            num_classes,
            config.eta,
            config.plastic.fanout,
            config.seed,
            device,
        );
        if config.fixed_eta {
            plastic.eta = plastic.eta.set_require_grad(false);
        }
        plastic
    });
    CifarAlexNet {
        features,
        classifier: new_classifier(num_classes, config.seed, device),
        plastic,
    }
}

/// How the lifetime loop runs a fine-tune.
pub fn finetune_loop_settings(config: &FinetuneConfig) -> LoopSettings {
    LoopSettings {
        batch_size: config.batch_size,
        window: config.window(),
        loss: config.loss,
        loss_steps: config.loss_steps,
        k_reduce: config.k_reduce,
        reset: config.reset,
        plastic: (config.method == Method::Ndhtl).then_some(config.plastic),
        augmentation: if config.augment {
            Augmentation::STANDARD
        } else {
            Augmentation::NONE
        },
        data_seed: stream_seed(config.seed, 0xDA7A),
    }
}

/// What a job driver needs besides the model: how to train, how long, and at what rate.
struct JobPlan<'a> {
    settings: LoopSettings,
    lifetimes: usize,
    lr_at: &'a dyn Fn(usize) -> f64,
    eval_batch_size: usize,
    fingerprint: String,
    momentum: f64,
    weight_decay: f64,
    /// Log label of a lifetime ("lifetime" or "epoch").
    unit: &'static str,
}

/// Trains `fresh` (or the run's checkpoint of it) for `plan.lifetimes`, evaluating, logging and
/// checkpointing after each. Shared by source training and fine-tuning.
fn drive_lifetimes(
    fresh: CifarAlexNet,
    plan: &JobPlan<'_>,
    data: &TaskData,
    device: &ComputeDevice,
    run_dir: Option<&Path>,
    observer: &mut dyn TrainingObserver,
    cancel: &CancelToken,
) -> Result<(CifarAlexNet, RunOutcome), TrainError> {
    let training_device = device.autodiff();
    let num_classes = data.task.num_classes();
    let hebbian_shape = fresh.plastic.as_ref().map(|_| {
        [
            plan.settings.hebbian_slots(),
            crate::model::FEATURE_DIM,
            num_classes,
        ]
    });
    let make_optimizer =
        |model: &CifarAlexNet| build_optimizer(model, plan.momentum, plan.weight_decay);
    let resumed = match run_dir {
        Some(dir) => load_checkpoint(
            dir,
            fresh.clone(),
            &plan.fingerprint,
            hebbian_shape,
            &training_device,
            make_optimizer,
        )?,
        None => None,
    };
    let (mut state, mut history) = match resumed {
        Some(loaded) => {
            tracing::info!(
                completed = loaded.progress.completed_lifetimes,
                "resuming from checkpoint"
            );
            let state = TrainingState {
                model: loaded.model,
                optimizer: loaded.optimizer,
                hebbian: loaded.hebbian,
            };
            (state, loaded.progress.history)
        }
        None => {
            let optimizer = make_optimizer(&fresh);
            let hebbian = hebbian_shape
                .map(|[slots, _, classes]| HebbianState::zeros(slots, classes, &training_device));
            let state = TrainingState {
                model: fresh,
                optimizer,
                hebbian,
            };
            (state, Vec::new())
        }
    };
    let resumed_lifetimes = history.len();
    observer.on_resume(&history);
    if let Some(dir) = run_dir {
        fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }

    for lifetime_index in resumed_lifetimes..plan.lifetimes {
        let lifetime = lifetime_index + 1;
        let lr = (plan.lr_at)(lifetime_index);
        let (next, totals) = train_lifetime(
            state,
            &plan.settings,
            lifetime_index,
            lr,
            &data.train,
            &training_device,
            observer,
            cancel,
        )?;
        state = next;
        check_finite(lifetime, "training loss", totals.loss)?;
        let (inference, hebb_eval) = inference_view(&state.model, state.hebbian.as_ref());
        let eval = evaluate(
            &inference,
            hebb_eval.clone(),
            &data.test,
            plan.eval_batch_size,
            &device.device,
        );
        check_finite(lifetime, "validation loss", eval.loss)?;
        let plastic = inference.plastic.as_ref();
        let scalar = |t: Tensor<1>| t.into_scalar::<f32>() as f64;
        let metrics = LifetimeMetrics {
            lifetime,
            val_loss: eval.loss,
            val_top1: eval.top1,
            val_top5: eval.top5,
            train_loss: totals.loss,
            train_top1: totals.top1,
            steps: totals.steps,
            backward_passes: totals.backward_passes,
            lr,
            eta: plastic.map(|p| scalar(p.eta.val())),
            alpha_abs_mean: plastic.map(|p| scalar(p.alpha.val().abs().mean())),
            hebb_abs_mean: hebb_eval.map(|h| scalar(h.abs().mean())),
            modulator_mean: totals.modulator_mean,
            train_seconds: totals.seconds,
            train_images_per_second: totals.images as f64 / totals.seconds.max(1e-9),
        };
        tracing::info!(
            unit = plan.unit,
            lifetime,
            // Shortest form (0.0002, not 0.00020000000000000004); the metrics keep every digit.
            lr = format_args!("{}", lr as f32),
            val_top1 = format_args!("{:.2}", metrics.val_top1),
            val_top5 = format_args!("{:.2}", metrics.val_top5),
            val_loss = format_args!("{:.4}", metrics.val_loss),
            train_loss = format_args!("{:.4}", metrics.train_loss),
            images_per_second = format_args!("{:.1}", metrics.train_images_per_second),
            "{} done",
            plan.unit
        );
        history.push(metrics.clone());
        if let Some(dir) = run_dir {
            let progress = Progress {
                fingerprint: plan.fingerprint.clone(),
                completed_lifetimes: lifetime,
                history: history.clone(),
            };
            save_checkpoint(
                dir,
                &state.model,
                &state.optimizer,
                state.hebbian.as_ref(),
                &progress,
            )?;
            write_metrics_file(dir, &history)?;
        }
        observer.on_lifetime(&metrics);
    }
    let summary = RunSummary::from_history(&history).expect("at least one lifetime");
    let outcome = RunOutcome {
        history,
        summary,
        resumed_lifetimes,
    };
    Ok((state.model, outcome))
}

/// Fine-tunes `data.task` from `source_features` (loaded on any device; moved as needed).
///
/// With `run_dir`, a checkpoint is written after every lifetime and an existing checkpoint of
/// the same configuration and source is resumed: the result equals an uninterrupted run.
#[allow(clippy::too_many_arguments)] // each input is distinct; a struct would only rename them
pub fn run_finetune(
    config: &FinetuneConfig,
    source_features: AlexNetFeatures,
    source_id: &str,
    data: &TaskData,
    device: &ComputeDevice,
    run_dir: Option<&Path>,
    observer: &mut dyn TrainingObserver,
    cancel: &CancelToken,
) -> Result<RunOutcome, TrainError> {
    config.validate()?;
    let training_device = device.autodiff();
    // `fork`, not `to_device`: features loaded on the plain device become trainable leaves of
    // the autodiff device (`to_device` would leave them constants of the graph, so that only the
    // head trained; a test checks that the features change unless frozen).
    let features = source_features.fork(&training_device).train();
    let fresh =
        assemble_finetune_model(features, config, data.task.num_classes(), &training_device);
    let plan = JobPlan {
        settings: finetune_loop_settings(config),
        lifetimes: config.lifetimes,
        lr_at: &|_| config.lr,
        eval_batch_size: config.eval_batch_size,
        fingerprint: config_fingerprint(&(config, source_id, &data.task.classes)),
        momentum: config.momentum,
        weight_decay: config.weight_decay,
        unit: "lifetime",
    };
    let (_, outcome) = drive_lifetimes(fresh, &plan, data, device, run_dir, observer, cancel)?;
    Ok(outcome)
}

/// A trained source model.
pub struct SourceOutcome {
    pub model: CifarAlexNet,
    pub run: RunOutcome,
    pub fingerprint: String,
}

/// How the lifetime loop runs source training.
pub fn source_loop_settings(config: &SourceConfig) -> LoopSettings {
    LoopSettings {
        batch_size: config.batch_size,
        window: 1,
        loss: crate::model::LossKind::Ce,
        loss_steps: super::config::LossSteps::All,
        k_reduce: super::config::KReduce::Sum,
        reset: super::config::ResetPolicy::Task,
        plastic: None,
        augmentation: if config.augment {
            Augmentation::STANDARD
        } else {
            Augmentation::NONE
        },
        data_seed: stream_seed(config.seed, 0x50_0C3),
    }
}

/// Trains the source model from random initialisation (spec §5.1), evaluating every epoch on
/// the source task's test images.
pub fn run_source(
    config: &SourceConfig,
    data: &TaskData,
    device: &ComputeDevice,
    run_dir: Option<&Path>,
    observer: &mut dyn TrainingObserver,
    cancel: &CancelToken,
) -> Result<SourceOutcome, TrainError> {
    config.validate()?;
    let fresh = CifarAlexNet::new(data.task.num_classes(), config.seed, &device.autodiff());
    let plan = JobPlan {
        settings: source_loop_settings(config),
        lifetimes: config.epochs,
        lr_at: &|epoch| config.lr_at_epoch(epoch),
        eval_batch_size: config.eval_batch_size,
        fingerprint: config_fingerprint(&(config, &data.task.classes)),
        momentum: config.momentum,
        weight_decay: config.weight_decay,
        unit: "epoch",
    };
    let (model, run) = drive_lifetimes(fresh, &plan, data, device, run_dir, observer, cancel)?;
    Ok(SourceOutcome {
        model,
        run,
        fingerprint: plan.fingerprint,
    })
}
