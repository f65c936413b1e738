//! The best configuration per target, and over all targets. A configuration is the values of
//! every parameter that varies in the sweep, except the target and the seed; its score on a
//! target is the mean over seeds, and over all targets the mean of its per-target means (only
//! configurations with results on every target compete there).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::params::{compare_values, distinct_sorted, parameters_of, varying};
use super::stats::{MeanStd, mean_std};
use super::text::{
    LATEX_END, csv_field, latex_begin, latex_escape, mean_std_cell, mean_std_latex, progress_note,
};
use super::{FinetuneOutcome, LifetimeView, Metric};

/// A configuration: `(parameter, value)` for each parameter that varies.
pub type Configuration = Vec<(String, String)>;

#[derive(Debug, Clone, Serialize)]
pub struct BestForTarget {
    pub target: String,
    pub configuration: Configuration,
    pub stats: MeanStd,
    /// How far ahead of the second-best configuration's mean (None with one configuration).
    pub margin: Option<f64>,
    pub configurations_compared: usize,
    pub finished: usize,
    pub total: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BestOverall {
    pub configuration: Configuration,
    /// Over targets: the mean (and std) of the per-target means.
    pub stats: MeanStd,
    pub margin: Option<f64>,
    pub configurations_compared: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BestReport {
    pub metric: Metric,
    pub view: LifetimeView,
    /// The parameters a configuration is made of.
    pub parameters: Vec<String>,
    pub per_target: Vec<BestForTarget>,
    /// `None` when no configuration has results on every target.
    pub overall: Option<BestOverall>,
    pub finished: usize,
    pub total: usize,
}

fn best_and_margin<K: Clone>(
    candidates: impl IntoIterator<Item = (K, MeanStd)>,
    metric: Metric,
) -> Option<(K, MeanStd, Option<f64>, usize)> {
    let mut ranked: Vec<(K, MeanStd)> = candidates.into_iter().collect();
    let count = ranked.len();
    // A stable sort keeps the configuration order among ties.
    ranked.sort_by(|a, b| {
        let order = a.1.mean.total_cmp(&b.1.mean);
        if metric.higher_is_better() {
            order.reverse()
        } else {
            order
        }
    });
    let mut ranked = ranked.into_iter();
    let (key, stats) = ranked.next()?;
    let margin = ranked
        .next()
        .map(|(_, second)| (stats.mean - second.mean).abs());
    Some((key, stats, margin, count))
}

pub fn best_configurations(
    outcomes: &[FinetuneOutcome],
    metric: Metric,
    view: LifetimeView,
) -> BestReport {
    let parameters: Vec<BTreeMap<&'static str, String>> = outcomes
        .iter()
        .map(|outcome| parameters_of(&outcome.config))
        .collect();
    let configuration_parameters = varying(&parameters, &["target", "seed"]);
    let configuration_of = |p: &BTreeMap<&'static str, String>| -> Configuration {
        configuration_parameters
            .iter()
            .map(|name| (name.to_string(), p[name].clone()))
            .collect()
    };
    let compare_configurations = |a: &Configuration, b: &Configuration| {
        a.iter()
            .zip(b)
            .map(|((_, x), (_, y))| compare_values(x, y))
            .find(|order| order.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };

    let targets = distinct_sorted(parameters.iter().map(|p| &p["target"]));
    // target → configuration → values of its finished jobs, and job counts.
    let mut per_target_means: BTreeMap<Configuration, BTreeMap<String, f64>> = BTreeMap::new();
    let mut per_target = Vec::new();
    for target in &targets {
        let mut groups: Vec<(Configuration, Vec<f64>, usize)> = Vec::new();
        for (outcome, p) in outcomes.iter().zip(&parameters) {
            if &p["target"] != target {
                continue;
            }
            let configuration = configuration_of(p);
            let index = match groups.iter().position(|(c, ..)| *c == configuration) {
                Some(index) => index,
                None => {
                    groups.push((configuration, Vec::new(), 0));
                    groups.len() - 1
                }
            };
            groups[index].2 += 1;
            if let Some(value) = metric.value(outcome, view) {
                groups[index].1.push(value);
            }
        }
        groups.sort_by(|a, b| compare_configurations(&a.0, &b.0));
        let finished = groups.iter().map(|g| g.1.len()).sum();
        let total = groups.iter().map(|g| g.2).sum();
        let scored: Vec<(Configuration, MeanStd)> = groups
            .iter()
            .filter_map(|(c, values, _)| Some((c.clone(), mean_std(values)?)))
            .collect();
        for (configuration, stats) in &scored {
            per_target_means
                .entry(configuration.clone())
                .or_default()
                .insert(target.clone(), stats.mean);
        }
        if let Some((configuration, stats, margin, compared)) = best_and_margin(scored, metric) {
            per_target.push(BestForTarget {
                target: target.clone(),
                configuration,
                stats,
                margin,
                configurations_compared: compared,
                finished,
                total,
            });
        }
    }

    let mut complete: Vec<(Configuration, MeanStd)> = per_target_means
        .into_iter()
        .filter(|(_, means)| means.len() == targets.len())
        .filter_map(|(c, means)| Some((c, mean_std(&means.into_values().collect::<Vec<_>>())?)))
        .collect();
    complete.sort_by(|a, b| compare_configurations(&a.0, &b.0));
    let overall = (targets.len() > 1)
        .then(|| best_and_margin(complete, metric))
        .flatten()
        .map(|(configuration, stats, margin, compared)| BestOverall {
            configuration,
            stats,
            margin,
            configurations_compared: compared,
        });

    BestReport {
        metric,
        view,
        parameters: configuration_parameters
            .iter()
            .map(|p| p.to_string())
            .collect(),
        per_target,
        overall,
        finished: outcomes.iter().filter(|o| o.is_finished()).count(),
        total: outcomes.len(),
    }
}

fn describe(configuration: &Configuration) -> String {
    if configuration.is_empty() {
        return "(the only configuration)".into();
    }
    configuration
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl BestReport {
    fn decimals(&self) -> usize {
        if self.metric == Metric::Loss { 3 } else { 2 }
    }

    pub fn to_markdown(&self) -> String {
        let mut out = progress_note(self.finished, self.total);
        let _ = writeln!(
            out,
            "Best configuration by {} ({}), mean ± std over seeds; configurations differ in: {}.\n",
            self.metric.label(),
            self.view.describe(),
            if self.parameters.is_empty() {
                "nothing (one configuration)".to_string()
            } else {
                self.parameters.join(", ")
            }
        );
        out.push_str(
            "| Target | Best configuration | Score | Ahead of 2nd by | Compared | done |\n",
        );
        out.push_str("|---|---|---|---|---|---|\n");
        let decimals = self.decimals();
        let margin = |m: Option<f64>| m.map_or("—".into(), |m| format!("{m:.decimals$}"));
        for row in &self.per_target {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {}/{} |",
                row.target,
                describe(&row.configuration),
                mean_std_cell(Some(row.stats), decimals),
                margin(row.margin),
                row.configurations_compared,
                row.finished,
                row.total
            );
        }
        match &self.overall {
            Some(overall) => {
                let _ = writeln!(
                    out,
                    "| **All targets** | {} | {} | {} | {} | {}/{} |",
                    describe(&overall.configuration),
                    mean_std_cell(Some(overall.stats), decimals),
                    margin(overall.margin),
                    overall.configurations_compared,
                    self.finished,
                    self.total
                );
                out.push_str(
                    "\nAll targets: the mean (± std across targets) of per-target means, among configurations with results on every target.\n",
                );
            }
            None if self.per_target.len() > 1 => {
                out.push_str("\nAll targets: no configuration has results on every target yet.\n");
            }
            None => {}
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "target,configuration,mean,std,n,margin,configurations_compared,finished,total\n",
        );
        let number = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        for row in &self.per_target {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                csv_field(&row.target),
                csv_field(&describe(&row.configuration)),
                row.stats.mean,
                row.stats.std,
                row.stats.n,
                number(row.margin),
                row.configurations_compared,
                row.finished,
                row.total
            );
        }
        if let Some(overall) = &self.overall {
            let _ = writeln!(
                out,
                "all,{},{},{},{},{},{},{},{}",
                csv_field(&describe(&overall.configuration)),
                overall.stats.mean,
                overall.stats.std,
                overall.stats.n,
                number(overall.margin),
                overall.configurations_compared,
                self.finished,
                self.total
            );
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }

    pub fn to_latex(&self) -> String {
        let mut out = format!(
            "% ndhtl: best configuration by {} ({}). Needs \\usepackage{{booktabs}}.\n",
            self.metric.label(),
            self.view.describe()
        );
        if self.finished < self.total {
            let _ = writeln!(
                out,
                "% Partial: {} of {} jobs finished.",
                self.finished, self.total
            );
        }
        let decimals = self.decimals();
        out.push_str(&latex_begin(4));
        out.push_str("Target & Best configuration & Score & Compared \\\\\n\\midrule\n");
        for row in &self.per_target {
            let _ = writeln!(
                out,
                "{} & {} & {} & {} \\\\",
                latex_escape(&row.target),
                latex_escape(&describe(&row.configuration)),
                mean_std_latex(Some(row.stats), decimals),
                row.configurations_compared
            );
        }
        if let Some(overall) = &self.overall {
            out.push_str("\\midrule\n");
            let _ = writeln!(
                out,
                "All targets & {} & {} & {} \\\\",
                latex_escape(&describe(&overall.configuration)),
                mean_std_latex(Some(overall.stats), decimals),
                overall.configurations_compared
            );
        }
        out.push_str(LATEX_END);
        out
    }
}
