//! Running one leased job on this machine. [`NdhtlRunner`] trains with the NDHTL library; tests
//! of the protocol plug in a fast fake through the [`JobRunner`] trait.

use std::path::{Path, PathBuf};

use ndhtl_core::config::{FinetuneConfig, SourceConfig};
use ndhtl_core::metrics::{LifetimeMetrics, RunSummary};

use ndhtl_core::dataset::Dataset;

use crate::data::TaskSpec;
use crate::data::synth::ensure_synthetic;
use crate::device::{BackendKind, ComputeDevice, DeviceSpec};
use crate::model::io::{SourceInfo, load_source_features, save_source_model};
use crate::train::checkpoint::checkpoint_dir;
use crate::train::{CancelToken, TaskData, TrainError, TrainingObserver, run_finetune, run_source};

/// What a lease asks for, resolved to local paths.
#[derive(Debug, Clone)]
pub struct JobInput {
    /// `source` or `finetune`.
    pub kind: String,
    pub config_json: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// The job's folder on this agent; a checkpoint to resume sits in `run_dir/checkpoint`.
    pub run_dir: PathBuf,
    /// The unpacked source model folder (holding `source.bpk`), for fine-tunes.
    pub source_model: Option<PathBuf>,
    /// The source model's id (its artifact hash), part of the fine-tune's identity.
    pub source_id: String,
    /// Where the CIFAR data of this job is, when not in the runner's own data folder (a
    /// dataset the coordinator served).
    pub data_root: Option<PathBuf>,
}

/// Reported after every lifetime.
#[derive(Debug, Clone)]
pub struct LifetimeEvent {
    pub metrics: LifetimeMetrics,
    /// The checkpoint written after this lifetime.
    pub checkpoint_dir: Option<PathBuf>,
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub summary: RunSummary,
    /// A folder to upload as the job's output artifact (the source model of a source job).
    pub output_dir: Option<PathBuf>,
}

/// Why a job failed, and whether another attempt can succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RunnerError {
    pub message: String,
    pub retryable: bool,
}

impl From<TrainError> for RunnerError {
    fn from(error: TrainError) -> Self {
        RunnerError {
            retryable: error.is_retryable(),
            message: error.to_string(),
        }
    }
}

fn fatal(message: impl ToString) -> RunnerError {
    RunnerError {
        message: message.to_string(),
        retryable: false,
    }
}

pub trait JobRunner: Send + Sync + 'static {
    /// Runs the job to the end (resuming from `run_dir`'s checkpoint if one is there), calling
    /// `on_lifetime` after each lifetime. Blocking; runs on its own thread.
    fn run(
        &self,
        input: &JobInput,
        on_lifetime: &mut dyn FnMut(LifetimeEvent),
        cancel: &CancelToken,
    ) -> Result<JobOutput, RunnerError>;
}

/// Trains with the NDHTL library: on the official CIFAR under `data_dir`, or on generated data
/// it makes under `generated_data_dir` when the job asks for it.
pub struct NdhtlRunner {
    pub data_dir: PathBuf,
    pub generated_data_dir: PathBuf,
    pub backend: Option<BackendKind>,
}

struct Forward<'a> {
    on_lifetime: &'a mut dyn FnMut(LifetimeEvent),
    checkpoint: Option<PathBuf>,
}

impl TrainingObserver for Forward<'_> {
    fn on_lifetime(&mut self, metrics: &LifetimeMetrics) {
        (self.on_lifetime)(LifetimeEvent {
            metrics: metrics.clone(),
            checkpoint_dir: self.checkpoint.clone(),
        });
    }
}

pub const SOURCE_MODEL_FILE: &str = "source.bpk";

impl NdhtlRunner {
    /// The folder holding the job's data.
    fn data_dir(&self, input: &JobInput, dataset: &Dataset) -> Result<PathBuf, RunnerError> {
        match dataset {
            Dataset::Cifar => Ok(input
                .data_root
                .clone()
                .unwrap_or_else(|| self.data_dir.clone())),
            Dataset::Synthetic(settings) => ensure_synthetic(&self.generated_data_dir, settings)
                .map_err(|error| RunnerError {
                    message: error.to_string(),
                    retryable: true,
                }),
        }
    }

    fn device(&self, device: &str) -> Result<ComputeDevice, RunnerError> {
        let spec: DeviceSpec = device.parse().map_err(fatal)?;
        ComputeDevice::resolve(spec, self.backend).map_err(fatal)
    }

    fn finetune(
        &self,
        input: &JobInput,
        forward: &mut Forward<'_>,
        cancel: &CancelToken,
    ) -> Result<JobOutput, RunnerError> {
        let config: FinetuneConfig = serde_json::from_str(&input.config_json)
            .map_err(|e| fatal(format!("fine-tune configuration: {e}")))?;
        let device = self.device(&input.device)?;
        let source_dir = input
            .source_model
            .as_ref()
            .ok_or_else(|| fatal("a fine-tune needs its source model"))?;
        let features = load_source_features(
            &source_dir.join(SOURCE_MODEL_FILE),
            config.seed,
            &device.device,
        )
        .map_err(fatal)?;
        let task: TaskSpec = config.task.parse().map_err(fatal)?;
        let data = TaskData::load(
            &self.data_dir(input, &config.dataset)?,
            &task,
            config.train_per_class,
        )?;
        let outcome = run_finetune(
            &config,
            features,
            &input.source_id,
            &data,
            &device,
            Some(&input.run_dir),
            forward,
            cancel,
        )?;
        Ok(JobOutput {
            summary: outcome.summary,
            output_dir: None,
        })
    }

    fn source(
        &self,
        input: &JobInput,
        forward: &mut Forward<'_>,
        cancel: &CancelToken,
    ) -> Result<JobOutput, RunnerError> {
        let config: SourceConfig = serde_json::from_str(&input.config_json)
            .map_err(|e| fatal(format!("source configuration: {e}")))?;
        let device = self.device(&input.device)?;
        let task: TaskSpec = config.task.parse().map_err(fatal)?;
        let data = TaskData::load(
            &self.data_dir(input, &config.dataset)?,
            &task,
            config.train_per_class,
        )?;
        let outcome = run_source(
            &config,
            &data,
            &device,
            Some(&input.run_dir),
            forward,
            cancel,
        )?;
        let output_dir = input.run_dir.join("output");
        let info = SourceInfo {
            task: config.task.clone(),
            num_classes: task.num_classes(),
            epochs: config.epochs,
            test_top1: outcome.run.summary.final_top1,
            config_fingerprint: outcome.fingerprint.clone(),
        };
        save_source_model(&outcome.model, &info, &output_dir.join(SOURCE_MODEL_FILE)).map_err(
            |e| RunnerError {
                message: e.to_string(),
                retryable: true,
            },
        )?;
        Ok(JobOutput {
            summary: outcome.run.summary,
            output_dir: Some(output_dir),
        })
    }
}

impl JobRunner for NdhtlRunner {
    fn run(
        &self,
        input: &JobInput,
        on_lifetime: &mut dyn FnMut(LifetimeEvent),
        cancel: &CancelToken,
    ) -> Result<JobOutput, RunnerError> {
        let mut forward = Forward {
            on_lifetime,
            checkpoint: Some(checkpoint_dir(&input.run_dir)),
        };
        match input.kind.as_str() {
            "finetune" => self.finetune(input, &mut forward, cancel),
            "source" => self.source(input, &mut forward, cancel),
            other => Err(fatal(format!("unknown job kind `{other}`"))),
        }
    }
}

/// Whether a folder exists and holds files.
pub fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}
