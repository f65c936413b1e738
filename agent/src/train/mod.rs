//! Training: source training, STL and NDHTL fine-tuning, evaluation, checkpoints.

pub mod checkpoint;
pub mod config;
pub mod finetune;
pub mod lifetime;
pub mod metrics;
pub mod optimizer;
pub mod step_metrics;

pub use config::{
    ConfigError, FinetuneConfig, KReduce, LossSteps, Method, ResetPolicy, SourceConfig,
};
pub use finetune::{RunOutcome, SourceOutcome, TaskData, TrainError, run_finetune, run_source};
pub use lifetime::{CancelToken, NoObserver, TrainingObserver};
pub use metrics::{EvalMetrics, LifetimeMetrics, RunSummary};
