//! Reports from a sweep's results: the paper's Table 3 reproduced (per target, STL and NDHTL
//! top-1/top-5 as mean ± std over seeds, the paired NDHTL − STL difference with a 95 %
//! confidence interval, the paper's numbers beside them, and the average row), in markdown,
//! CSV or JSON. Pure functions of the results; jobs not finished yet are counted and marked.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{FinetuneConfig, Method};
use crate::metrics::RunSummary;

/// Table 3 of the paper (spec §7): (task, STL top-1, NDHTL top-1, STL top-5, NDHTL top-5).
pub const PAPER_TABLE3: [(&str, f64, f64, f64, f64); 10] = [
    ("T1", 59.6, 60.7, 94.7, 96.5),
    ("T2", 69.9, 73.1, 97.3, 97.9),
    ("T3", 65.0, 65.9, 94.9, 96.0),
    ("T4", 75.0, 75.6, 97.8, 98.4),
    ("T5", 67.9, 68.8, 95.0, 95.7),
    ("T6", 63.0, 63.9, 94.0, 94.4),
    ("T7", 57.0, 57.6, 91.0, 91.9),
    ("T8", 51.6, 55.2, 95.5, 96.3),
    ("T9", 73.7, 74.0, 99.0, 99.4),
    ("T10", 74.4, 75.3, 97.9, 98.2),
];

/// One fine-tune job's outcome, as a report reads it.
#[derive(Debug, Clone)]
pub struct FinetuneOutcome {
    pub config: FinetuneConfig,
    /// `None` while the job has not finished.
    pub summary: Option<RunSummary>,
}

/// Which lifetime a number comes from (spec D-16): the final one (the default; no test-set
/// selection) or the best one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LifetimeView {
    Final,
    Best,
}

impl LifetimeView {
    fn top1(self, summary: &RunSummary) -> f64 {
        match self {
            LifetimeView::Final => summary.final_top1,
            LifetimeView::Best => summary.best_top1,
        }
    }
    fn top5(self, summary: &RunSummary) -> f64 {
        match self {
            LifetimeView::Final => summary.final_top5,
            LifetimeView::Best => summary.best_top5,
        }
    }
}

/// Mean and sample standard deviation (n − 1); the std is 0 for one value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

pub fn mean_std(values: &[f64]) -> Option<MeanStd> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some(MeanStd { mean, std, n })
}

/// Two-sided 95 % quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => 1.96,
    }
}

/// A paired difference: mean, and the 95 % confidence interval's half-width (None for n < 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedDifference {
    pub mean: f64,
    pub half_width: Option<f64>,
    pub pairs: usize,
}

pub fn paired_difference(pairs: &[(f64, f64)]) -> Option<PairedDifference> {
    let differences: Vec<f64> = pairs.iter().map(|(stl, ndhtl)| ndhtl - stl).collect();
    let stats = mean_std(&differences)?;
    let half_width =
        (stats.n > 1).then(|| t_quantile_975(stats.n - 1) * stats.std / (stats.n as f64).sqrt());
    Some(PairedDifference {
        mean: stats.mean,
        half_width,
        pairs: stats.n,
    })
}

/// One metric of one target row.
#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    pub stl: Option<MeanStd>,
    pub ndhtl: Option<MeanStd>,
    pub difference: Option<PairedDifference>,
    pub paper_stl: Option<f64>,
    pub paper_ndhtl: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table3Row {
    pub target: String,
    pub top1: MetricRow,
    pub top5: MetricRow,
    /// Finished and total jobs of this target.
    pub finished: usize,
    pub total: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table3 {
    pub view: LifetimeView,
    pub rows: Vec<Table3Row>,
    /// Over the targets with both methods: the mean of the per-target means.
    pub average: Option<Table3Row>,
}

fn metric_row(
    outcomes: &[&FinetuneOutcome],
    value: impl Fn(&RunSummary) -> f64,
    paper: Option<(f64, f64)>,
) -> MetricRow {
    let of = |method: Method| -> Vec<(u64, f64)> {
        outcomes
            .iter()
            .filter(|o| o.config.method == method)
            .filter_map(|o| o.summary.as_ref().map(|s| (o.config.seed, value(s))))
            .collect()
    };
    let stl = of(Method::Stl);
    let ndhtl = of(Method::Ndhtl);
    let values = |pairs: &[(u64, f64)]| pairs.iter().map(|(_, v)| *v).collect::<Vec<_>>();
    let paired: Vec<(f64, f64)> = stl
        .iter()
        .filter_map(|(seed, s)| ndhtl.iter().find(|(n, _)| n == seed).map(|(_, n)| (*s, *n)))
        .collect();
    MetricRow {
        stl: mean_std(&values(&stl)),
        ndhtl: mean_std(&values(&ndhtl)),
        difference: paired_difference(&paired),
        paper_stl: paper.map(|p| p.0),
        paper_ndhtl: paper.map(|p| p.1),
    }
}

/// Table 3 from a sweep's fine-tunes, targets in T1..T10 order, then custom targets by name.
pub fn table3(outcomes: &[FinetuneOutcome], view: LifetimeView) -> Table3 {
    let mut by_target: BTreeMap<(usize, String), Vec<&FinetuneOutcome>> = BTreeMap::new();
    for outcome in outcomes {
        let task = &outcome.config.task;
        let order = PAPER_TABLE3
            .iter()
            .position(|(name, ..)| name == task)
            .unwrap_or(usize::MAX);
        by_target
            .entry((order, task.clone()))
            .or_default()
            .push(outcome);
    }
    let rows: Vec<Table3Row> = by_target
        .into_iter()
        .map(|((_, target), outcomes)| {
            let paper = PAPER_TABLE3.iter().find(|(name, ..)| *name == target);
            Table3Row {
                top1: metric_row(&outcomes, |s| view.top1(s), paper.map(|p| (p.1, p.2))),
                top5: metric_row(&outcomes, |s| view.top5(s), paper.map(|p| (p.3, p.4))),
                finished: outcomes.iter().filter(|o| o.summary.is_some()).count(),
                total: outcomes.len(),
                target,
            }
        })
        .collect();
    let average = average_row(&rows);
    Table3 {
        view,
        rows,
        average,
    }
}

fn average_metric(rows: &[&MetricRow]) -> MetricRow {
    let means = |pick: &dyn Fn(&MetricRow) -> Option<f64>| -> Option<MeanStd> {
        let values: Vec<f64> = rows.iter().filter_map(|r| pick(r)).collect();
        (values.len() == rows.len())
            .then(|| mean_std(&values))
            .flatten()
    };
    // The average row's difference is paired by target: (STL mean, NDHTL mean) per target.
    let pairs: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.stl?.mean, r.ndhtl?.mean)))
        .collect();
    let paper = |pick: &dyn Fn(&MetricRow) -> Option<f64>| -> Option<f64> {
        let values: Vec<f64> = rows.iter().filter_map(|r| pick(r)).collect();
        (values.len() == rows.len() && !values.is_empty())
            .then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    MetricRow {
        stl: means(&|r| r.stl.map(|m| m.mean)),
        ndhtl: means(&|r| r.ndhtl.map(|m| m.mean)),
        difference: paired_difference(&pairs),
        paper_stl: paper(&|r| r.paper_stl),
        paper_ndhtl: paper(&|r| r.paper_ndhtl),
    }
}

fn average_row(rows: &[Table3Row]) -> Option<Table3Row> {
    let complete: Vec<&Table3Row> = rows
        .iter()
        .filter(|r| r.top1.stl.is_some() && r.top1.ndhtl.is_some())
        .collect();
    if complete.len() < 2 {
        return None;
    }
    Some(Table3Row {
        target: format!("Avg ({} targets)", complete.len()),
        top1: average_metric(&complete.iter().map(|r| &r.top1).collect::<Vec<_>>()),
        top5: average_metric(&complete.iter().map(|r| &r.top5).collect::<Vec<_>>()),
        finished: complete.iter().map(|r| r.finished).sum(),
        total: complete.iter().map(|r| r.total).sum(),
    })
}

fn cell(value: Option<MeanStd>) -> String {
    match value {
        Some(m) if m.n > 1 => format!("{:.2} ± {:.2}", m.mean, m.std),
        Some(m) => format!("{:.2}", m.mean),
        None => "—".into(),
    }
}

fn difference_cell(value: Option<PairedDifference>) -> String {
    match value {
        Some(PairedDifference {
            mean,
            half_width: Some(h),
            ..
        }) => format!("{mean:+.2} [{:+.2}, {:+.2}]", mean - h, mean + h),
        Some(d) => format!("{:+.2}", d.mean),
        None => "—".into(),
    }
}

fn paper_cell(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{v:.1}"))
}

fn paper_difference(row: &MetricRow) -> String {
    match (row.paper_stl, row.paper_ndhtl) {
        (Some(s), Some(n)) => format!("{:+.1}", n - s),
        _ => "—".into(),
    }
}

impl Table3 {
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let view = match self.view {
            LifetimeView::Final => "final lifetime",
            LifetimeView::Best => "best lifetime (selected on the test set: optimistic)",
        };
        let _ = writeln!(
            out,
            "Table 3 reproduced ({view}); mean ± std over seeds, Δ = NDHTL − STL paired by seed with its 95% CI; paper numbers beside.\n"
        );
        out.push_str("| Target | STL top-1 | NDHTL top-1 | Δ top-1 [95% CI] | paper STL | paper NDHTL | paper Δ | STL top-5 | NDHTL top-5 | Δ top-5 [95% CI] | paper STL | paper NDHTL | paper Δ | done |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for row in self.rows.iter().chain(self.average.iter()) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
                row.target,
                cell(row.top1.stl),
                cell(row.top1.ndhtl),
                difference_cell(row.top1.difference),
                paper_cell(row.top1.paper_stl),
                paper_cell(row.top1.paper_ndhtl),
                paper_difference(&row.top1),
                cell(row.top5.stl),
                cell(row.top5.ndhtl),
                difference_cell(row.top5.difference),
                paper_cell(row.top5.paper_stl),
                paper_cell(row.top5.paper_ndhtl),
                paper_difference(&row.top5),
                row.finished,
                row.total
            );
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "target,metric,stl_mean,stl_std,ndhtl_mean,ndhtl_std,n_stl,n_ndhtl,diff_mean,diff_ci_low,diff_ci_high,paper_stl,paper_ndhtl,finished,total\n",
        );
        let number = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        for row in self.rows.iter().chain(self.average.iter()) {
            for (metric, m) in [("top1", &row.top1), ("top5", &row.top5)] {
                let d = m.difference;
                let _ = writeln!(
                    out,
                    "{},{metric},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    row.target,
                    number(m.stl.map(|s| s.mean)),
                    number(m.stl.map(|s| s.std)),
                    number(m.ndhtl.map(|s| s.mean)),
                    number(m.ndhtl.map(|s| s.std)),
                    m.stl.map_or(0, |s| s.n),
                    m.ndhtl.map_or(0, |s| s.n),
                    number(d.map(|d| d.mean)),
                    number(d.and_then(|d| d.half_width.map(|h| d.mean - h))),
                    number(d.and_then(|d| d.half_width.map(|h| d.mean + h))),
                    number(m.paper_stl),
                    number(m.paper_ndhtl),
                    row.finished,
                    row.total
                );
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(task: &str, method: Method, seed: u64, top1: f64, top5: f64) -> FinetuneOutcome {
        FinetuneOutcome {
            config: FinetuneConfig {
                task: task.into(),
                method,
                seed,
                ..FinetuneConfig::default()
            },
            summary: Some(RunSummary {
                lifetimes: 2,
                final_top1: top1,
                final_top5: top5,
                final_val_loss: 1.0,
                best_top1: top1 + 1.0,
                best_top1_lifetime: 1,
                best_top5: top5,
            }),
        }
    }

    #[test]
    fn statistics_match_hand_computed_values() {
        // mean 4, deviations -2, 0, 2: variance (4 + 0 + 4) / 2 = 4, std 2.
        let m = mean_std(&[2.0, 4.0, 6.0]).unwrap();
        assert_eq!((m.mean, m.std, m.n), (4.0, 2.0, 3));
        // Differences 1, 2, 3: mean 2, std 1, half-width t(2) · 1/√3 = 4.303 / 1.7320508.
        let d = paired_difference(&[(10.0, 11.0), (10.0, 12.0), (10.0, 13.0)]).unwrap();
        assert_eq!(d.mean, 2.0);
        assert!((d.half_width.unwrap() - 2.484339).abs() < 1e-5, "{d:?}");
        assert_eq!(paired_difference(&[(1.0, 2.0)]).unwrap().half_width, None);
        assert_eq!(t_quantile_975(1), 12.706);
        assert_eq!(t_quantile_975(100), 1.96);
    }

    #[test]
    fn table3_pairs_by_seed_and_averages_over_targets() {
        let outcomes = vec![
            outcome("T2", Method::Stl, 0, 60.0, 90.0),
            outcome("T2", Method::Ndhtl, 0, 62.0, 91.0),
            outcome("T2", Method::Stl, 1, 64.0, 92.0),
            outcome("T2", Method::Ndhtl, 1, 65.0, 92.0),
            outcome("T1", Method::Stl, 0, 50.0, 80.0),
            outcome("T1", Method::Ndhtl, 0, 53.0, 85.0),
            FinetuneOutcome {
                summary: None,
                ..outcome("T1", Method::Ndhtl, 1, 0.0, 0.0)
            },
        ];
        let table = table3(&outcomes, LifetimeView::Final);
        assert_eq!(table.rows[0].target, "T1");
        assert_eq!((table.rows[0].finished, table.rows[0].total), (2, 3));
        let t2 = &table.rows[1].top1;
        assert_eq!(t2.stl.unwrap().mean, 62.0);
        // STL 60, 64: std √8 = 2.828…
        assert!((t2.stl.unwrap().std - 8f64.sqrt()).abs() < 1e-12);
        // Paired differences 2 and 1: mean 1.5, std √0.5, half-width 12.706 · √0.5/√2 = 6.353.
        let d = t2.difference.unwrap();
        assert_eq!(d.mean, 1.5);
        assert!((d.half_width.unwrap() - 6.353).abs() < 1e-9);
        assert_eq!((t2.paper_stl, t2.paper_ndhtl), (Some(69.9), Some(73.1)));
        // Average over T1 (50 → 53) and T2 (62 → 63.5): STL 56, NDHTL 58.25, Δ 2.25.
        let average = table.average.as_ref().unwrap();
        assert_eq!(average.top1.stl.unwrap().mean, 56.0);
        assert_eq!(average.top1.ndhtl.unwrap().mean, 58.25);
        assert_eq!(average.top1.difference.unwrap().mean, 2.25);
        assert!((average.top1.paper_stl.unwrap() - (59.6 + 69.9) / 2.0).abs() < 1e-12);
        let best = table3(&outcomes, LifetimeView::Best);
        assert_eq!(best.rows[1].top1.stl.unwrap().mean, 63.0);
        let markdown = table.to_markdown();
        assert!(
            markdown.contains(
                "| T2 | 62.00 ± 2.83 | 63.50 ± 2.12 | +1.50 [-4.85, +7.85] | 69.9 | 73.1 | +3.2 |"
            ),
            "{markdown}"
        );
        assert!(markdown.contains("| 2/3 |"));
        assert!(table.to_csv().lines().count() == 1 + 2 * 3);
        assert!(table.to_json().contains("\"view\": \"final\""));
    }
}
