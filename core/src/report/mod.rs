//! Reports from a sweep's results. Pure functions of the fine-tunes' outcomes, so that the
//! coordinator's API and the command line print the same numbers:
//!
//! - [`table3`](mod@table3): the paper's Table 3 reproduced (per target, STL and NDHTL top-1/top-5 as
//!   mean ± std over seeds, the paired NDHTL − STL difference with its 95 % confidence interval,
//!   the paper's numbers beside them, the average row);
//! - [`grid`](mod@grid): a metric over any two parameters, mean ± std per cell, the best cell marked;
//! - [`best`]: the best configuration per target and over all targets;
//! - [`params`]: the parameters a report can group by, read from job configurations;
//! - [`stats`]: means, standard deviations and confidence intervals.
//!
//! Every report renders as markdown, CSV, JSON or LaTeX. Jobs not finished yet are counted and
//! marked (`done/total`), so a report on a running sweep says what it is missing.

pub mod best;
pub mod grid;
pub mod params;
pub mod stats;
pub mod table3;
mod text;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::config::FinetuneConfig;
use crate::metrics::{LifetimeMetrics, RunSummary};

pub use best::{BestReport, best_configurations};
pub use grid::{GridReport, GridSpec, grid};
pub use stats::{MeanStd, PairedDifference, mean_std, paired_difference, t_quantile_975};
pub use table3::{PAPER_TABLE3, Table3, table3};

/// One fine-tune job's outcome, as a report reads it.
#[derive(Debug, Clone)]
pub struct FinetuneOutcome {
    pub job_id: String,
    pub config: FinetuneConfig,
    /// `None` while the job has not finished (or if it failed or was cancelled).
    pub summary: Option<RunSummary>,
    /// The per-lifetime records stored so far, in lifetime order (for learning curves).
    pub history: Vec<LifetimeMetrics>,
}

impl FinetuneOutcome {
    /// An outcome from a job's stored records (as the coordinator keeps them and serves them):
    /// its configuration, its state, its summary (empty unless succeeded) and its lifetime
    /// records. `None` for jobs that are not fine-tunes.
    pub fn from_records(
        job_id: &str,
        kind: &str,
        config_json: &str,
        state: &str,
        summary_json: &str,
        metrics_json: &[String],
    ) -> Result<Option<FinetuneOutcome>, ReportError> {
        if kind != "finetune" {
            return Ok(None);
        }
        let record_error = |record: &'static str| {
            let job_id = job_id.to_string();
            move |source| ReportError::Record {
                job_id,
                record,
                source,
            }
        };
        let config: FinetuneConfig =
            serde_json::from_str(config_json).map_err(record_error("configuration"))?;
        let summary = if state == "succeeded" && !summary_json.is_empty() {
            Some(serde_json::from_str(summary_json).map_err(record_error("summary"))?)
        } else {
            None
        };
        let history = metrics_json
            .iter()
            .map(|json| serde_json::from_str(json).map_err(record_error("lifetime metrics")))
            .collect::<Result<Vec<LifetimeMetrics>, _>>()?;
        Ok(Some(FinetuneOutcome {
            job_id: job_id.to_string(),
            config,
            summary,
            history,
        }))
    }

    pub fn is_finished(&self) -> bool {
        self.summary.is_some()
    }
}

/// Which lifetime a number comes from (spec D-16): the final one (the default; no test-set
/// selection) or the best one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LifetimeView {
    Final,
    Best,
}

impl LifetimeView {
    pub fn describe(self) -> &'static str {
        match self {
            LifetimeView::Final => "final lifetime",
            LifetimeView::Best => "best lifetime (selected on the test set: optimistic)",
        }
    }
}

/// The number a grid or a best-configuration report compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Validation top-1 accuracy (%).
    Top1,
    /// Validation top-5 accuracy among the task's classes (%).
    Top5,
    /// Validation cross-entropy (lower is better).
    Loss,
}

impl Metric {
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::Loss)
    }

    pub fn label(self) -> &'static str {
        match self {
            Metric::Top1 => "top-1 (%)",
            Metric::Top5 => "top-5 (%)",
            Metric::Loss => "validation loss",
        }
    }

    /// The metric of a finished outcome under `view`; `None` while it has not finished. The
    /// best-lifetime loss is the lowest loss of any lifetime.
    pub fn value(self, outcome: &FinetuneOutcome, view: LifetimeView) -> Option<f64> {
        let summary = outcome.summary.as_ref()?;
        Some(match (self, view) {
            (Metric::Top1, LifetimeView::Final) => summary.final_top1,
            (Metric::Top1, LifetimeView::Best) => summary.best_top1,
            (Metric::Top5, LifetimeView::Final) => summary.final_top5,
            (Metric::Top5, LifetimeView::Best) => summary.best_top5,
            (Metric::Loss, LifetimeView::Final) => summary.final_val_loss,
            (Metric::Loss, LifetimeView::Best) => outcome
                .history
                .iter()
                .map(|record| record.val_loss)
                .fold(summary.final_val_loss, f64::min),
        })
    }

    /// Whether `candidate` beats `incumbent`.
    pub fn better(self, candidate: f64, incumbent: f64) -> bool {
        if self.higher_is_better() {
            candidate > incumbent
        } else {
            candidate < incumbent
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    Markdown,
    Csv,
    Json,
    Latex,
}

impl ReportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Markdown => "md",
            ReportFormat::Csv => "csv",
            ReportFormat::Json => "json",
            ReportFormat::Latex => "tex",
        }
    }
}

/// Which report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReportKind {
    Table3,
    Grid(GridSpec),
    Best,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRequest {
    pub kind: ReportKind,
    pub metric: Metric,
    pub view: LifetimeView,
    pub format: ReportFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("unknown parameter `{name}`; reports can group by: {}", params::PARAMETERS.join(", "))]
    UnknownParameter { name: String },
    #[error("a grid needs two different parameters, got `{0}` twice")]
    SameParameter(String),
    #[error("`{parameter}` cannot be both an axis of the grid and pooled")]
    AxisPooled { parameter: String },
    #[error("bad filter `{filter}`: expected NAME=VALUE, e.g. clip=1")]
    BadFilter { filter: String },
    #[error("job {job_id}: its stored {record} is not valid JSON: {source}")]
    Record {
        job_id: String,
        record: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Renders one report of a sweep's fine-tune outcomes.
pub fn render(
    outcomes: &[FinetuneOutcome],
    request: &ReportRequest,
) -> Result<String, ReportError> {
    Ok(match &request.kind {
        ReportKind::Table3 => {
            let table = table3(outcomes, request.view);
            match request.format {
                ReportFormat::Markdown => table.to_markdown(),
                ReportFormat::Csv => table.to_csv(),
                ReportFormat::Json => table.to_json(),
                ReportFormat::Latex => table.to_latex(),
            }
        }
        ReportKind::Grid(spec) => {
            let report = grid(outcomes, spec, request.metric, request.view)?;
            match request.format {
                ReportFormat::Markdown => report.to_markdown(),
                ReportFormat::Csv => report.to_csv(),
                ReportFormat::Json => report.to_json(),
                ReportFormat::Latex => report.to_latex(),
            }
        }
        ReportKind::Best => {
            let report = best_configurations(outcomes, request.metric, request.view);
            match request.format {
                ReportFormat::Markdown => report.to_markdown(),
                ReportFormat::Csv => report.to_csv(),
                ReportFormat::Json => report.to_json(),
                ReportFormat::Latex => report.to_latex(),
            }
        }
    })
}

/// `done/total` over a set of outcomes.
pub fn progress(outcomes: &[FinetuneOutcome]) -> (usize, usize) {
    (
        outcomes.iter().filter(|o| o.is_finished()).count(),
        outcomes.len(),
    )
}
