//! Every report of a sweep written into one folder: Table 3, the best configurations and a
//! two-parameter grid in markdown, CSV, JSON and LaTeX, and the figures (learning curves per
//! target, the gains against the paper, the grid's heatmaps) as SVG and PNG. This is what
//! `ndhtl run` leaves behind and what `ndhtl report --out-dir` writes.

use std::path::{Path, PathBuf};

use ndhtl_core::config::NDHTL_ONLY_FIELDS;
use ndhtl_core::report::params::{parameters_of, varying};
use ndhtl_core::report::{
    FinetuneOutcome, GridSpec, LifetimeView, Metric, ReportError, ReportFormat, ReportKind,
    ReportRequest, grid, render, table3,
};

use crate::plots::curves::learning_curves;
use crate::plots::gains::GainsChart;
use crate::plots::heatmap::Heatmap;
use crate::plots::{PlotError, file_safe, save};

/// At most this many heatmaps per grid (one per slice); the tables hold every slice.
pub const MAX_HEATMAPS: usize = 24;

#[derive(Debug, Clone)]
pub struct BundleOptions {
    pub view: LifetimeView,
    /// The metric of the grid and the best-configuration tables.
    pub metric: Metric,
    /// The grid to write; `None` picks the sweep's first two varying hyperparameters.
    pub grid: Option<GridSpec>,
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions {
            view: LifetimeView::Final,
            metric: Metric::Top1,
            grid: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The grid a sweep suggests: its first two varying hyperparameters (not the target, method or
/// seed), or one of them against the method (or the target); pooled over seeds and, with
/// several targets and two hyperparameters, over targets; STL left out when both axes only
/// matter for NDHTL. `None` when nothing but the seed varies enough to make two axes.
pub fn suggested_grid(outcomes: &[FinetuneOutcome]) -> Option<GridSpec> {
    let parameters: Vec<_> = outcomes.iter().map(|o| parameters_of(&o.config)).collect();
    let all_varying = varying(&parameters, &[]);
    let mut axes: Vec<&str> = all_varying
        .iter()
        .copied()
        .filter(|p| !["target", "method", "seed", "dataset"].contains(p))
        .collect();
    if axes.is_empty() {
        return None;
    }
    axes.extend(
        ["method", "target"]
            .into_iter()
            .filter(|p| all_varying.contains(p)),
    );
    let [rows, cols, ..] = axes[..] else {
        return None;
    };
    let mut spec = GridSpec::new(rows, cols);
    if all_varying.contains(&"target") && rows != "target" && cols != "target" {
        spec.pool.push("target".into());
    }
    if all_varying.contains(&"method")
        && NDHTL_ONLY_FIELDS.contains(&rows)
        && NDHTL_ONLY_FIELDS.contains(&cols)
    {
        spec.filters.push(("method".into(), "ndhtl".into()));
    }
    Some(spec)
}

fn write(path: PathBuf, text: &str) -> Result<PathBuf, BundleError> {
    std::fs::write(&path, text).map_err(|source| BundleError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Writes the bundle into `dir` (created if needed); returns the files written.
pub fn write_report_bundle(
    outcomes: &[FinetuneOutcome],
    dir: &Path,
    options: &BundleOptions,
) -> Result<Vec<PathBuf>, BundleError> {
    std::fs::create_dir_all(dir).map_err(|source| BundleError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let grid_spec = options.grid.clone().or_else(|| suggested_grid(outcomes));
    let mut kinds = vec![
        ("table3".to_string(), ReportKind::Table3),
        ("best".into(), ReportKind::Best),
    ];
    if let Some(spec) = &grid_spec {
        kinds.push((
            format!("grid-{}-{}", file_safe(&spec.rows), file_safe(&spec.cols)),
            ReportKind::Grid(spec.clone()),
        ));
    }
    let mut written = Vec::new();
    for (name, kind) in kinds {
        for format in [
            ReportFormat::Markdown,
            ReportFormat::Csv,
            ReportFormat::Json,
            ReportFormat::Latex,
        ] {
            let request = ReportRequest {
                kind: kind.clone(),
                metric: options.metric,
                view: options.view,
                format,
            };
            let text = render(outcomes, &request)?;
            written.push(write(
                dir.join(format!("{name}.{}", format.extension())),
                &text,
            )?);
        }
    }

    let plots = dir.join("plots");
    for curves in learning_curves(outcomes) {
        let stem = plots.join(format!("curves-{}", file_safe(&curves.target)));
        written.extend(save(&curves, &stem)?);
    }
    if let Some(chart) = GainsChart::from_table3(&table3(outcomes, options.view)) {
        written.extend(save(&chart, &plots.join("gains"))?);
    }
    if let Some(spec) = &grid_spec {
        let report = grid(outcomes, spec, options.metric, options.view)?;
        let heatmaps = Heatmap::from_grid(&report);
        if heatmaps.len() > MAX_HEATMAPS {
            tracing::warn!(
                slices = heatmaps.len(),
                drawn = MAX_HEATMAPS,
                "the grid has more tables than heatmaps drawn; the grid tables hold them all"
            );
        }
        for (index, (heatmap, slice)) in heatmaps
            .iter()
            .zip(&report.slices)
            .take(MAX_HEATMAPS)
            .enumerate()
        {
            let mut stem = format!(
                "heatmap-{}-{}",
                file_safe(&spec.rows),
                file_safe(&spec.cols)
            );
            if !slice.fixed.is_empty() {
                let label: Vec<String> = slice
                    .fixed
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect();
                stem = format!("{stem}-{:02}-{}", index + 1, file_safe(&label.join("-")));
            }
            written.extend(save(heatmap, &plots.join(stem))?);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::test_support::outcome;
    use ndhtl_core::config::Method;

    #[test]
    fn a_grid_sweep_bundle_holds_every_table_and_figure() {
        let mut outcomes = Vec::new();
        for target in ["T1", "T2"] {
            for seed in 0..2 {
                outcomes.push(outcome(target, Method::Stl, seed, 40.0, 1.0));
                for (eta, k) in [(0.01, 5), (0.01, 10), (0.1, 5), (0.1, 10)] {
                    let mut o = outcome(target, Method::Ndhtl, seed, 40.0 + eta as f64 * 10.0, 1.0);
                    o.config.eta = eta;
                    o.config.k = k;
                    outcomes.push(o);
                }
            }
        }
        let spec = suggested_grid(&outcomes).unwrap();
        assert_eq!((spec.rows.as_str(), spec.cols.as_str()), ("eta", "k"));
        assert_eq!(spec.pool, ["seed", "target"]);
        assert_eq!(spec.filters, [("method".to_string(), "ndhtl".to_string())]);

        let dir = tempfile::tempdir().unwrap();
        let written =
            write_report_bundle(&outcomes, dir.path(), &BundleOptions::default()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        for expected in [
            "table3.md",
            "table3.tex",
            "best.csv",
            "grid-eta-k.json",
            "plots/curves-T1.svg",
            "plots/curves-T2.png",
            "plots/gains.svg",
            "plots/heatmap-eta-k.png",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        assert_eq!(names.len(), 12 + 2 * 2 + 2 + 2);
        let grid = std::fs::read_to_string(dir.path().join("grid-eta-k.md")).unwrap();
        // η 0.1: finals 40 + 1 + 4 = 45 on every target and seed: the best row.
        assert!(
            grid.contains("| 0.1 | **45.00 ± 0.00** ★ | 45.00 ± 0.00 |"),
            "{grid}"
        );
    }

    #[test]
    fn one_hyperparameter_is_gridded_against_the_method() {
        // STL's K is reset (to 1): K is `n/a` for STL, and does not vary among NDHTL's jobs.
        let mut stl = outcome("T1", Method::Stl, 0, 40.0, 1.0);
        stl.config.k = 1;
        let mut outcomes = vec![stl];
        for eta in [0.05, 0.2] {
            let mut o = outcome("T1", Method::Ndhtl, 0, 41.0, 1.0);
            o.config.eta = eta;
            o.config.k = 5;
            outcomes.push(o);
        }
        let spec = suggested_grid(&outcomes).unwrap();
        assert_eq!((spec.rows.as_str(), spec.cols.as_str()), ("eta", "method"));
        assert!(spec.filters.is_empty());
    }

    #[test]
    fn a_table3_sweep_has_no_grid() {
        let outcomes = vec![
            outcome("T1", Method::Stl, 0, 40.0, 1.0),
            outcome("T1", Method::Ndhtl, 0, 41.0, 1.0),
        ];
        assert!(suggested_grid(&outcomes).is_none());
    }
}
