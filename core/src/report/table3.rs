//! The paper's Table 3 reproduced: per target, STL and NDHTL top-1/top-5 as mean ± std over
//! seeds, the paired NDHTL − STL difference with a 95 % confidence interval, the paper's numbers
//! beside them, and the average row. Jobs not finished yet are counted in a `done` column.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::params::parameters_of;
use super::stats::{MeanStd, PairedDifference, mean_std, paired_difference};
use super::text::{LATEX_END, latex_begin, mean_std_latex, progress_note};
use super::{FinetuneOutcome, LifetimeView};
use crate::config::Method;
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
    /// The most configurations (all parameters but the seed) a method has on one target: above
    /// 1 (a grid sweep), each method's cell pools them, and the grid and best reports are the
    /// ones to read.
    pub most_configurations: usize,
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
                top1: metric_row(&outcomes, |s| view_top1(view, s), paper.map(|p| (p.1, p.2))),
                top5: metric_row(&outcomes, |s| view_top5(view, s), paper.map(|p| (p.3, p.4))),
                finished: outcomes.iter().filter(|o| o.summary.is_some()).count(),
                total: outcomes.len(),
                target,
            }
        })
        .collect();
    let average = average_row(&rows);
    type Configuration = Vec<(&'static str, String)>;
    let mut configurations: BTreeMap<(String, Method), Vec<Configuration>> = BTreeMap::new();
    for outcome in outcomes {
        let configuration: Vec<(&str, String)> = parameters_of(&outcome.config)
            .into_iter()
            .filter(|(name, _)| *name != "seed")
            .collect();
        let seen = configurations
            .entry((outcome.config.task.clone(), outcome.config.method))
            .or_default();
        if !seen.contains(&configuration) {
            seen.push(configuration);
        }
    }
    Table3 {
        most_configurations: configurations.values().map(Vec::len).max().unwrap_or(0),
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
    super::text::mean_std_cell(value, 2)
}

fn view_top1(view: LifetimeView, summary: &RunSummary) -> f64 {
    match view {
        LifetimeView::Final => summary.final_top1,
        LifetimeView::Best => summary.best_top1,
    }
}

fn view_top5(view: LifetimeView, summary: &RunSummary) -> f64 {
    match view {
        LifetimeView::Final => summary.final_top5,
        LifetimeView::Best => summary.best_top5,
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
    /// Finished and total fine-tunes over all targets.
    pub fn progress(&self) -> (usize, usize) {
        self.rows
            .iter()
            .fold((0, 0), |(f, t), row| (f + row.finished, t + row.total))
    }

    /// A booktabs table in the paper's layout (top-1 then top-5; ours, then the paper's).
    pub fn to_latex(&self) -> String {
        let (finished, total) = self.progress();
        let mut out = format!(
            "% ndhtl: Table 3 reproduced ({}); mean $\\pm$ std over seeds, $\\Delta$ = NDHTL $-$ STL paired by seed with its 95% CI.\n% Needs \\usepackage{{booktabs}}.\n",
            self.view.describe()
        );
        if finished < total {
            let _ = writeln!(out, "% Partial: {finished} of {total} jobs finished.");
        }
        out.push_str(&latex_begin(11));
        out.push_str(
            " & \\multicolumn{5}{c}{Top-1 (\\%)} & \\multicolumn{5}{c}{Top-5 (\\%)} \\\\\n",
        );
        out.push_str("\\cmidrule(lr){2-6} \\cmidrule(lr){7-11}\n");
        out.push_str("Target & STL & NDHTL & $\\Delta$ [95\\% CI] & paper STL & paper NDHTL & STL & NDHTL & $\\Delta$ [95\\% CI] & paper STL & paper NDHTL \\\\\n\\midrule\n");
        let difference = |d: Option<PairedDifference>| match d {
            Some(PairedDifference {
                mean,
                half_width: Some(h),
                ..
            }) => format!("{mean:+.2} [{:+.2}, {:+.2}]", mean - h, mean + h),
            Some(d) => format!("{:+.2}", d.mean),
            None => "--".into(),
        };
        let paper = |v: Option<f64>| v.map_or("--".into(), |v| format!("{v:.1}"));
        for (index, row) in self.rows.iter().chain(self.average.iter()).enumerate() {
            if index == self.rows.len() {
                out.push_str("\\midrule\n");
            }
            let mut line = super::text::latex_escape(&row.target);
            for metric in [&row.top1, &row.top5] {
                let _ = write!(
                    line,
                    " & {} & {} & {} & {} & {}",
                    mean_std_latex(metric.stl, 2),
                    mean_std_latex(metric.ndhtl, 2),
                    difference(metric.difference),
                    paper(metric.paper_stl),
                    paper(metric.paper_ndhtl)
                );
            }
            let _ = writeln!(out, "{line} \\\\");
        }
        out.push_str(LATEX_END);
        out
    }

    pub fn to_markdown(&self) -> String {
        let (finished, total) = self.progress();
        let mut out = progress_note(finished, total);
        let view = self.view.describe();
        if self.most_configurations > 1 {
            let _ = writeln!(
                out,
                "**Note:** this sweep ran up to {} configurations of a method on one target, and each cell below pools them; `--grid` and `--best` compare them.\n",
                self.most_configurations
            );
        }
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
