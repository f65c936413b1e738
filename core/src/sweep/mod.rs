//! The sweep language: one YAML file names the data, the source training, the fine-tune axes
//! (targets, methods, seeds and every parameter of spec §5 and §8), random-search draws,
//! include/exclude rules and the resources jobs need. [`parse_sweep`] checks it all before
//! anything runs; [`SweepDefinition::expand`] turns it into job configurations.
//!
//! ```yaml
//! name: eta-k
//! data: {synthetic: {cifar10_train_per_class: 60}}
//! source: {epochs: 3, lr: 0.02, batch_size: 32}
//! finetune:
//!   targets: [T1, T2]
//!   methods: [stl, ndhtl]
//!   seeds: {range: {from: 0, to: 2, step: 1}}
//!   eta: [0.05, 0.1]
//!   k: [5, 10]
//! exclude:
//!   - {target: T2, k: 5}
//! ```
//!
//! Everything here is pure: no files, no clock. The callers read the file and print.

mod expand;
mod locate;
mod param;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

pub use expand::ALL_TARGETS;
pub use param::{Distribution, Param};
pub use schema::{BackendName, CifarData, DataSection, DeviceName, FinetuneAxes, SweepFile};

use crate::config::{FinetuneConfig, SourceConfig};
use crate::dataset::Dataset;
use crate::task::{TaskError, TaskSpec};

/// Sweep files larger than this are refused before they are parsed.
pub const MAX_SWEEP_FILE_BYTES: usize = 1 << 20;

/// The default limit on the jobs one sweep may imply.
pub const DEFAULT_MAX_JOBS: u64 = 100_000;

/// Why a sweep cannot run. Every variant names the file; parse and value errors also name the
/// line, the column and the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SweepError {
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        /// The key path (`finetune.k`), when known.
        key: Option<String>,
        message: String,
    },
    #[error(
        "{file}: the sweep implies {count} jobs, over the limit of {limit}; narrow its grid, or raise `max_jobs` if you mean it"
    )]
    TooManyJobs {
        file: String,
        count: u128,
        limit: u64,
    },
    #[error("{file}: {size} bytes is too large for a sweep file (the limit is {limit} bytes)")]
    FileTooLarge {
        file: String,
        size: usize,
        limit: usize,
    },
}

/// A known-useless choice: the sweep runs, but the user should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepWarning {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// How many jobs it concerns.
    pub jobs: usize,
}

impl std::fmt::Display for SweepWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {} ({} job{})",
            self.file,
            self.line,
            self.column,
            self.message,
            self.jobs,
            if self.jobs == 1 { "" } else { "s" }
        )
    }
}

/// What jobs need from an agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRequest {
    pub backend: Option<BackendName>,
    pub device: Option<DeviceName>,
}

/// A fine-tune and the source it starts from (an index into [`SweepPlan::sources`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFinetune {
    pub config: FinetuneConfig,
    pub source: usize,
}

/// A sweep expanded into job configurations, in a deterministic order.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPlan {
    pub name: String,
    pub description: Option<String>,
    pub priority: i32,
    pub data: Option<DataSection>,
    pub dataset: Dataset,
    pub resources: ResourceRequest,
    pub sources: Vec<SourceConfig>,
    pub finetunes: Vec<PlannedFinetune>,
    pub warnings: Vec<SweepWarning>,
}

impl SweepPlan {
    pub fn job_count(&self) -> usize {
        self.sources.len() + self.finetunes.len()
    }
}

/// A parsed, checked sweep, not yet expanded.
#[derive(Debug)]
pub struct SweepDefinition {
    pub file_name: String,
    text: String,
    pub file: SweepFile,
}

/// Parses and checks a sweep file's text, every target and source task against the class
/// tables included. `file_name` is only used in messages.
pub fn parse_sweep(text: &str, file_name: &str) -> Result<SweepDefinition, SweepError> {
    if text.len() > MAX_SWEEP_FILE_BYTES {
        return Err(SweepError::FileTooLarge {
            file: file_name.into(),
            size: text.len(),
            limit: MAX_SWEEP_FILE_BYTES,
        });
    }
    let file: SweepFile = serde_yaml::from_str(text).map_err(|error| {
        let (line, column) = error
            .location()
            .map(|location| (location.line(), location.column()))
            .unwrap_or((1, 1));
        let message = locate::strip_position(&error.to_string());
        let key = message
            .split_once(": ")
            .and_then(|(head, _)| (!head.contains(' ')).then(|| head.to_string()));
        SweepError::Invalid {
            file: file_name.into(),
            line,
            column,
            key,
            message,
        }
    })?;
    let definition = SweepDefinition {
        file_name: file_name.into(),
        text: text.into(),
        file,
    };
    definition.check_semantics()?;
    Ok(definition)
}

impl SweepDefinition {
    /// An error at a key path, located in the text.
    fn error_at(&self, key: &str, message: impl Into<String>) -> SweepError {
        let (line, column) = locate::locate_key(&self.text, key);
        SweepError::Invalid {
            file: self.file_name.clone(),
            line,
            column,
            key: Some(key.into()),
            message: format!("{key}: {}", message.into()),
        }
    }

    /// A task as a job would parse it (`T3`, `cifar100:apple,bed`, …), or an error at `key`.
    fn check_task(&self, key: &str, task: &serde_json::Value) -> Result<(), SweepError> {
        let text = task.as_str().unwrap_or_default();
        match text.parse::<TaskSpec>() {
            Ok(_) => Ok(()),
            Err(error) => Err(self.error_at(key, error.to_string())),
        }
    }

    /// [`Self::check_task`] for a target, which may also be `all` (expanded to T1..T10 before
    /// this check); an unknown name's error says so.
    fn check_target(&self, key: &str, target: &serde_json::Value) -> Result<(), SweepError> {
        let text = target.as_str().unwrap_or_default();
        match text.parse::<TaskSpec>() {
            Ok(_) => Ok(()),
            Err(error @ TaskError::UnknownTask(_)) => Err(self.error_at(
                key,
                format!("{error}; a sweep's targets may also be `all` (T1..T10)"),
            )),
            Err(error) => Err(self.error_at(key, error.to_string())),
        }
    }

    fn check_semantics(&self) -> Result<(), SweepError> {
        let file = &self.file;
        if file.name.trim().is_empty() {
            return Err(self.error_at("name", "a sweep needs a name"));
        }
        for axis in expand::source_axes(&file.source) {
            if axis.name == "task" {
                for task in &axis.grid {
                    self.check_task("source.task", task)?;
                }
            }
        }
        let blocks = std::iter::once(("finetune".to_string(), &file.finetune)).chain(
            file.include
                .iter()
                .enumerate()
                .map(|(i, axes)| (format!("include[{i}]"), axes)),
        );
        for (section, axes) in blocks {
            for axis in expand::finetune_axes(axes) {
                if axis.name == "target" {
                    for target in &axis.grid {
                        self.check_target(&format!("{section}.target"), target)?;
                    }
                }
                if section != "finetune" && axis.sampler.is_some() {
                    return Err(self.error_at(
                        &format!("{section}.{}", axis.name),
                        "include entries take values or lists, not distributions",
                    ));
                }
            }
        }
        for (i, rule) in file.exclude.iter().enumerate() {
            let axes = expand::finetune_axes(rule);
            if axes.is_empty() {
                return Err(self.error_at(
                    &format!("exclude[{i}]"),
                    "an empty rule would exclude every job",
                ));
            }
            if let Some(axis) = axes.iter().find(|axis| axis.sampler.is_some()) {
                return Err(self.error_at(
                    &format!("exclude[{i}].{}", axis.name),
                    "exclude rules take values or lists, not distributions",
                ));
            }
        }
        let sampled = expand::finetune_axes(&file.finetune)
            .iter()
            .any(|axis| axis.sampler.is_some());
        match (sampled, file.samples) {
            (true, None) => {
                return Err(self.error_at(
                    "finetune",
                    "a distribution (uniform, log_uniform, choice) needs `samples: N` at the top level",
                ));
            }
            (_, Some(0)) => return Err(self.error_at("samples", "must be at least 1")),
            (false, Some(_)) => {
                return Err(self.error_at(
                    "samples",
                    "no parameter is a distribution, so there is nothing to sample",
                ));
            }
            _ => {}
        }
        if let Some(data) = &file.data
            && data.cifar.is_some() == data.synthetic.is_some()
        {
            return Err(self.error_at(
                "data",
                "give one of `cifar: {dir, download}` or `synthetic: {...}`",
            ));
        }
        if let Some(milestones) = &file.source.lr_milestones
            && milestones.iter().any(|m| !(0.0..=1.0).contains(m))
        {
            return Err(self.error_at(
                "source.lr_milestones",
                "milestones are fractions of the epochs, each in [0, 1]",
            ));
        }
        Ok(())
    }

    fn dataset(&self) -> Dataset {
        match self.file.data.as_ref().and_then(|data| data.synthetic) {
            Some(settings) => Dataset::Synthetic(settings),
            None => Dataset::Cifar,
        }
    }

    fn samples(&self) -> usize {
        self.file.samples.unwrap_or(1)
    }

    /// Fine-tune axis blocks: the main one and one per include entry.
    fn blocks(&self) -> Vec<Vec<expand::Axis>> {
        let main = expand::finetune_axes(&self.file.finetune);
        let mut blocks = vec![main.clone()];
        for entry in &self.file.include {
            let overrides = expand::finetune_axes(entry);
            let mut block: Vec<expand::Axis> = main
                .iter()
                .filter(|axis| !overrides.iter().any(|o| o.name == axis.name))
                .cloned()
                .collect();
            block.extend(overrides);
            blocks.push(block);
        }
        blocks
    }

    /// An upper bound on the jobs the sweep implies (before exclusions and dedup), computed
    /// from the axis lengths alone.
    pub fn job_bound(&self) -> u128 {
        let sources = expand::block_size(&expand::source_axes(&self.file.source), 1);
        let finetunes: u128 = self
            .blocks()
            .iter()
            .map(|block| expand::block_size(block, self.samples()))
            .sum();
        sources.saturating_add(sources.saturating_mul(finetunes))
    }

    /// Expands the sweep into job configurations, refusing it first if its bound exceeds
    /// `max_jobs` (the file's own `max_jobs`, else `default_limit`).
    pub fn expand(&self, default_limit: u64) -> Result<SweepPlan, SweepError> {
        let limit = self.file.max_jobs.unwrap_or(default_limit);
        let bound = self.job_bound();
        if bound > limit as u128 {
            return Err(SweepError::TooManyJobs {
                file: self.file_name.clone(),
                count: bound,
                limit,
            });
        }
        let dataset = self.dataset();
        let sources = expand::expand_sources(
            &expand::source_axes(&self.file.source),
            self.file.source.lr_milestones.as_ref(),
            dataset,
        )
        .map_err(|failure| self.error_at(&format!("source.{}", failure.key), failure.message))?;
        let exclusions: Vec<expand::ExclusionRule> = self
            .file
            .exclude
            .iter()
            .map(|rule| expand::ExclusionRule::from_axes(expand::finetune_axes(rule)))
            .collect();
        let mut seen = HashSet::new();
        let mut configs = Vec::new();
        for block in self.blocks() {
            expand::expand_finetunes(
                &block,
                self.samples(),
                self.file.sample_seed,
                dataset,
                &exclusions,
                &mut seen,
                &mut configs,
            )
            .map_err(|failure| {
                self.error_at(&format!("finetune.{}", failure.key), failure.message)
            })?;
        }
        let warnings = self.warnings(&configs);
        let finetunes = (0..sources.len())
            .flat_map(|source| {
                configs.iter().map(move |config| PlannedFinetune {
                    config: config.clone(),
                    source,
                })
            })
            .collect();
        Ok(SweepPlan {
            name: self.file.name.clone(),
            description: self.file.description.clone(),
            priority: self.file.priority,
            data: self.file.data.clone(),
            dataset,
            resources: ResourceRequest {
                backend: self.file.resources.backend,
                device: self.file.resources.device,
            },
            sources,
            finetunes,
            warnings,
        })
    }

    /// The configurations' warnings, one per distinct message, located at the key concerned.
    fn warnings(&self, configs: &[FinetuneConfig]) -> Vec<SweepWarning> {
        let mut warnings: Vec<SweepWarning> = Vec::new();
        for config in configs {
            for warning in config.warnings() {
                let message = warning.message;
                if let Some(existing) = warnings.iter_mut().find(|w| w.message == message) {
                    existing.jobs += 1;
                    continue;
                }
                let key = format!("finetune.{}", warning.field);
                let (line, column) = locate::locate_key(&self.text, &key);
                warnings.push(SweepWarning {
                    file: self.file_name.clone(),
                    line,
                    column,
                    message,
                    jobs: 1,
                });
            }
        }
        warnings
    }
}
