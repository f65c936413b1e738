//! The sweep file, as written: every section and key a sweep may hold. Unknown keys are refused
//! (`deny_unknown_fields`) and every value is checked as it is parsed, so serde_yaml reports the
//! line and column of the first problem.

use std::path::PathBuf;

use serde::Deserialize;

use super::param::{AtLeastOne, Finite, Fraction, Momentum, NonNegative, Param, Positive};
use crate::config::{KReduce, LossSteps, Method, ResetPolicy};
use crate::dataset::SyntheticData;
use crate::plastic::{LossKind, PlasticityRule, PostActivity, TraceMode};

/// A whole sweep file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Shown in status tables and reports.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Higher runs first; sweeps of equal priority share agents fairly.
    #[serde(default)]
    pub priority: i32,
    /// The official CIFAR (the default) or generated data.
    #[serde(default)]
    pub data: Option<DataSection>,
    #[serde(default)]
    pub source: SourceSection,
    pub finetune: FinetuneAxes,
    /// Draws of the distributions (`uniform`, `log_uniform`, `choice`), each run on the whole grid.
    #[serde(default)]
    pub samples: Option<usize>,
    /// Seed of the random-search draws.
    #[serde(default)]
    pub sample_seed: u64,
    /// Extra combinations: each entry replaces the axes it names and keeps the others.
    #[serde(default)]
    pub include: Vec<FinetuneAxes>,
    /// Combinations to leave out: a job matching every key of an entry is dropped.
    #[serde(default)]
    pub exclude: Vec<FinetuneAxes>,
    #[serde(default)]
    pub resources: ResourcesSection,
    /// Refuse the sweep if it implies more jobs than this (default 100,000).
    #[serde(default)]
    pub max_jobs: Option<u64>,
}

/// Where the data comes from: `cifar: {dir, download}` (the default) or `synthetic: {...}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The official CIFAR-10/100 binaries, in each agent's data folder.
    #[serde(default)]
    pub cifar: Option<CifarData>,
    /// Generated data; agents make it themselves.
    #[serde(default)]
    pub synthetic: Option<SyntheticData>,
}

/// The official CIFAR data, for `ndhtl run` (cluster agents use their own `--data`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CifarData {
    /// The local data folder (default `data`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Download the archives into `dir` first when they are missing.
    #[serde(default)]
    pub download: bool,
}

/// Source training: each parameter may be a grid, and every fine-tune runs on every source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub task: Option<Param<String>>,
    pub epochs: Option<Param<AtLeastOne>>,
    pub lr: Option<Param<Positive>>,
    pub momentum: Option<Param<Momentum>>,
    pub weight_decay: Option<Param<NonNegative>>,
    pub batch_size: Option<Param<AtLeastOne>>,
    /// Epoch fractions at which the learning rate decays (one list, not a grid).
    pub lr_milestones: Option<Vec<f64>>,
    pub lr_gamma: Option<Param<Fraction>>,
    pub seed: Option<Param<u64>>,
    pub train_per_class: Option<Param<AtLeastOne>>,
    pub augment: Option<Param<bool>>,
    pub eval_batch_size: Option<Param<AtLeastOne>>,
}

/// The fine-tune axes: the targets, methods and seeds, and every training and NDHTL parameter
/// of spec §5 and §8. The same keys name combinations in `include` and `exclude`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneAxes {
    /// `T1`..`T10`, `all`, or custom class lists (`cifar100:apple,bed`, `cifar100:super=...`).
    #[serde(alias = "targets")]
    pub target: Option<Param<String>>,
    #[serde(alias = "methods")]
    pub method: Option<Param<Method>>,
    #[serde(alias = "seeds")]
    pub seed: Option<Param<u64>>,
    pub lifetimes: Option<Param<AtLeastOne>>,
    pub batch_size: Option<Param<AtLeastOne>>,
    pub lr: Option<Param<Positive>>,
    pub momentum: Option<Param<Momentum>>,
    pub weight_decay: Option<Param<NonNegative>>,
    pub train_per_class: Option<Param<AtLeastOne>>,
    pub freeze_features: Option<Param<bool>>,
    pub augment: Option<Param<bool>>,
    pub loss: Option<Param<LossKind>>,
    pub k: Option<Param<AtLeastOne>>,
    pub eta: Option<Param<Finite>>,
    pub fixed_eta: Option<Param<bool>>,
    pub rule: Option<Param<PlasticityRule>>,
    pub fanout: Option<Param<bool>>,
    pub post: Option<Param<PostActivity>>,
    pub trace: Option<Param<TraceMode>>,
    pub clip: Option<Param<NonNegative>>,
    pub reset: Option<Param<ResetPolicy>>,
    pub loss_steps: Option<Param<LossSteps>>,
    pub k_reduce: Option<Param<KReduce>>,
    pub eval_batch_size: Option<Param<AtLeastOne>>,
}

/// What a job needs from an agent.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSection {
    /// `flex` or `tch`; any when absent.
    #[serde(default)]
    pub backend: Option<BackendName>,
    /// `cpu` or `cuda`; any when absent.
    #[serde(default)]
    pub device: Option<DeviceName>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    Flex,
    Tch,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceName {
    Cpu,
    Cuda,
}
