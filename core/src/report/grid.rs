//! Grid tables: a metric over any two parameters (rows × columns), mean ± std per cell over the
//! pooled parameters (the seeds by default), the best cell marked. Parameters that vary but are
//! neither an axis nor pooled split the grid into one table per combination (a "slice"), so no
//! cell silently averages over settings the reader cannot see.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::params::{self, compare_values, distinct_sorted, parameters_of, varying};
use super::stats::{MeanStd, mean_std};
use super::text::{
    LATEX_END, csv_field, latex_begin, latex_escape, mean_std_cell, mean_std_latex, progress_note,
    progress_suffix,
};
use super::{FinetuneOutcome, LifetimeView, Metric, ReportError};

/// What a grid shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    pub rows: String,
    pub cols: String,
    /// Parameters whose values are pooled into each cell's mean ± std (default: `seed`).
    pub pool: Vec<String>,
    /// Only outcomes with these values (`(parameter, value)`, values as reports print them).
    pub filters: Vec<(String, String)>,
}

impl GridSpec {
    /// A grid pooling over seeds (unless the seed is one of its axes).
    pub fn new(rows: impl Into<String>, cols: impl Into<String>) -> GridSpec {
        let (rows, cols) = (rows.into(), cols.into());
        let pool = if rows == "seed" || cols == "seed" {
            Vec::new()
        } else {
            vec!["seed".into()]
        };
        GridSpec {
            rows,
            cols,
            pool,
            filters: Vec::new(),
        }
    }

    /// Parses `NAME=VALUE` filters.
    pub fn parse_filter(filter: &str) -> Result<(String, String), ReportError> {
        let bad = || ReportError::BadFilter {
            filter: filter.to_string(),
        };
        let (name, value) = filter.split_once('=').ok_or_else(bad)?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(bad());
        }
        check_parameter(name)?;
        Ok((name.to_string(), value.to_string()))
    }

    fn validate(&self) -> Result<(), ReportError> {
        check_parameter(&self.rows)?;
        check_parameter(&self.cols)?;
        if self.rows == self.cols {
            return Err(ReportError::SameParameter(self.rows.clone()));
        }
        for pooled in &self.pool {
            check_parameter(pooled)?;
            if *pooled == self.rows || *pooled == self.cols {
                return Err(ReportError::AxisPooled {
                    parameter: pooled.clone(),
                });
            }
        }
        for (name, _) in &self.filters {
            check_parameter(name)?;
        }
        Ok(())
    }
}

fn check_parameter(name: &str) -> Result<(), ReportError> {
    if params::is_parameter(name) {
        Ok(())
    } else {
        Err(ReportError::UnknownParameter {
            name: name.to_string(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GridCell {
    /// Over the cell's finished jobs; `None` if none has finished.
    pub stats: Option<MeanStd>,
    pub finished: usize,
    /// Jobs of the sweep in this cell; 0 when the sweep has no such combination.
    pub total: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct GridSlice {
    /// The values of the parameters this table holds fixed (empty when nothing else varies).
    pub fixed: Vec<(String, String)>,
    pub row_values: Vec<String>,
    pub col_values: Vec<String>,
    /// `cells[row][col]`.
    pub cells: Vec<Vec<GridCell>>,
    /// The best cell with a result: `(row, col)`.
    pub best: Option<(usize, usize)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GridReport {
    pub rows: String,
    pub cols: String,
    pub metric: Metric,
    pub view: LifetimeView,
    pub pooled: Vec<String>,
    pub filters: Vec<(String, String)>,
    pub slices: Vec<GridSlice>,
    pub finished: usize,
    pub total: usize,
}

/// An outcome with its parameters as reports print them.
type Described<'a> = (&'a FinetuneOutcome, BTreeMap<&'static str, String>);

/// The grid of `metric` over `spec.rows` × `spec.cols`.
pub fn grid(
    outcomes: &[FinetuneOutcome],
    spec: &GridSpec,
    metric: Metric,
    view: LifetimeView,
) -> Result<GridReport, ReportError> {
    spec.validate()?;
    let selected: Vec<Described<'_>> = outcomes
        .iter()
        .map(|outcome| (outcome, parameters_of(&outcome.config)))
        .filter(|(_, parameters)| {
            spec.filters
                .iter()
                .all(|(name, value)| parameters.get(name.as_str()) == Some(value))
        })
        .collect();
    let mut excluded: Vec<&str> = vec![spec.rows.as_str(), spec.cols.as_str()];
    excluded.extend(spec.pool.iter().map(String::as_str));
    let slice_parameters = varying(selected.iter().map(|(_, p)| p), &excluded);

    let mut by_slice: BTreeMap<Vec<String>, Vec<&Described<'_>>> = BTreeMap::new();
    for entry in &selected {
        let key = slice_parameters
            .iter()
            .map(|name| entry.1[name].clone())
            .collect();
        by_slice.entry(key).or_default().push(entry);
    }
    let mut slice_keys: Vec<Vec<String>> = by_slice.keys().cloned().collect();
    slice_keys.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| compare_values(x, y))
            .find(|order| order.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });

    let slices = slice_keys
        .into_iter()
        .map(|key| {
            let entries = &by_slice[&key];
            let row_values = distinct_sorted(entries.iter().map(|e| &e.1[spec.rows.as_str()]));
            let col_values = distinct_sorted(entries.iter().map(|e| &e.1[spec.cols.as_str()]));
            let cells: Vec<Vec<GridCell>> = row_values
                .iter()
                .map(|row| {
                    col_values
                        .iter()
                        .map(|col| {
                            let members: Vec<&FinetuneOutcome> = entries
                                .iter()
                                .filter(|e| {
                                    &e.1[spec.rows.as_str()] == row
                                        && &e.1[spec.cols.as_str()] == col
                                })
                                .map(|e| e.0)
                                .collect();
                            let values: Vec<f64> = members
                                .iter()
                                .filter_map(|o| metric.value(o, view))
                                .collect();
                            GridCell {
                                stats: mean_std(&values),
                                finished: values.len(),
                                total: members.len(),
                            }
                        })
                        .collect()
                })
                .collect();
            let best = best_cell(&cells, metric);
            GridSlice {
                fixed: slice_parameters
                    .iter()
                    .map(|name| name.to_string())
                    .zip(key)
                    .collect(),
                row_values,
                col_values,
                cells,
                best,
            }
        })
        .collect();

    Ok(GridReport {
        rows: spec.rows.clone(),
        cols: spec.cols.clone(),
        metric,
        view,
        pooled: spec.pool.clone(),
        filters: spec.filters.clone(),
        slices,
        finished: selected.iter().filter(|(o, _)| o.is_finished()).count(),
        total: selected.len(),
    })
}

fn best_cell(cells: &[Vec<GridCell>], metric: Metric) -> Option<(usize, usize)> {
    let mut best: Option<((usize, usize), f64)> = None;
    for (r, row) in cells.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let Some(stats) = cell.stats else { continue };
            if best.is_none_or(|(_, incumbent)| metric.better(stats.mean, incumbent)) {
                best = Some(((r, c), stats.mean));
            }
        }
    }
    best.map(|(position, _)| position)
}

/// How a renderer writes a cell: an absent combination, a value, and the best value.
struct CellMarkup {
    absent: &'static str,
    value: fn(Option<MeanStd>, usize) -> String,
    best: fn(String) -> String,
}

const MARKDOWN: CellMarkup = CellMarkup {
    absent: "—",
    value: mean_std_cell,
    best: |value| format!("**{value}** ★"),
};

const LATEX: CellMarkup = CellMarkup {
    absent: "--",
    value: mean_std_latex,
    best: |value| format!("\\textbf{{{value}}}"),
};

/// A cell's text: absent (not in the sweep), pending (nothing finished), or its value, marked
/// when best and followed by `(done/total)` when incomplete.
fn cell_text(cell: &GridCell, best: bool, markup: &CellMarkup, decimals: usize) -> String {
    match (cell.total, cell.stats) {
        (0, _) => markup.absent.to_string(),
        (_, None) => format!("pending{}", progress_suffix(0, cell.total)),
        (_, stats) => {
            let value = (markup.value)(stats, decimals);
            let value = if best { (markup.best)(value) } else { value };
            value + &progress_suffix(cell.finished, cell.total)
        }
    }
}

impl GridSlice {
    fn title(&self) -> String {
        self.fixed
            .iter()
            .map(|(name, value)| format!("{name} = {value}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl GridReport {
    fn decimals(&self) -> usize {
        if self.metric == Metric::Loss { 3 } else { 2 }
    }

    fn caption(&self) -> String {
        let mut caption = format!(
            "{} ({}), mean ± std over {}; rows: {}, columns: {}",
            self.metric.label(),
            self.view.describe(),
            self.pooled.join(", "),
            self.rows,
            self.cols
        );
        if !self.filters.is_empty() {
            let filters: Vec<String> = self
                .filters
                .iter()
                .map(|(name, value)| format!("{name} = {value}"))
                .collect();
            let _ = write!(caption, "; only {}", filters.join(", "));
        }
        caption
    }

    pub fn to_markdown(&self) -> String {
        let mut out = progress_note(self.finished, self.total);
        let _ = writeln!(out, "Grid: {}. ★ marks the best cell.\n", self.caption());
        if self.slices.is_empty() {
            out.push_str("No fine-tunes match.\n");
        }
        let decimals = self.decimals();
        for slice in &self.slices {
            if !slice.fixed.is_empty() {
                let _ = writeln!(out, "### {}\n", slice.title());
            }
            let _ = write!(out, "| {} \\ {} |", self.rows, self.cols);
            for col in &slice.col_values {
                let _ = write!(out, " {col} |");
            }
            out.push('\n');
            out.push_str(&"|---".repeat(slice.col_values.len() + 1));
            out.push_str("|\n");
            for (r, row) in slice.row_values.iter().enumerate() {
                let _ = write!(out, "| {row} |");
                for (c, cell) in slice.cells[r].iter().enumerate() {
                    let text = cell_text(cell, slice.best == Some((r, c)), &MARKDOWN, decimals);
                    let _ = write!(out, " {text} |");
                }
                out.push('\n');
            }
            out.push('\n');
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut out = format!(
            "slice,{},{},mean,std,n,finished,total,best\n",
            csv_field(&self.rows),
            csv_field(&self.cols)
        );
        let number = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        for slice in &self.slices {
            let label: Vec<String> = slice
                .fixed
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            for (r, row) in slice.row_values.iter().enumerate() {
                for (c, col) in slice.col_values.iter().enumerate() {
                    let cell = &slice.cells[r][c];
                    if cell.total == 0 {
                        continue;
                    }
                    let _ = writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{}",
                        csv_field(&label.join(";")),
                        csv_field(row),
                        csv_field(col),
                        number(cell.stats.map(|s| s.mean)),
                        number(cell.stats.map(|s| s.std)),
                        cell.stats.map_or(0, |s| s.n),
                        cell.finished,
                        cell.total,
                        slice.best == Some((r, c))
                    );
                }
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }

    pub fn to_latex(&self) -> String {
        let mut out = format!(
            "% ndhtl grid: {}. Best cell in bold. Needs \\usepackage{{booktabs}}.\n",
            self.caption()
        );
        if self.finished < self.total {
            let _ = writeln!(
                out,
                "% Partial: {} of {} jobs finished; (done/total) marks incomplete cells.",
                self.finished, self.total
            );
        }
        let decimals = self.decimals();
        for slice in &self.slices {
            if !slice.fixed.is_empty() {
                let _ = writeln!(out, "% {}", slice.title());
            }
            out.push_str(&latex_begin(slice.col_values.len() + 1));
            let _ = write!(
                out,
                "{} $\\backslash$ {}",
                latex_escape(&self.rows),
                latex_escape(&self.cols)
            );
            for col in &slice.col_values {
                let _ = write!(out, " & {}", latex_escape(col));
            }
            out.push_str(" \\\\\n\\midrule\n");
            for (r, row) in slice.row_values.iter().enumerate() {
                out.push_str(&latex_escape(row));
                for (c, cell) in slice.cells[r].iter().enumerate() {
                    let text = cell_text(cell, slice.best == Some((r, c)), &LATEX, decimals);
                    let _ = write!(out, " & {text}");
                }
                out.push_str(" \\\\\n");
            }
            out.push_str(LATEX_END);
        }
        out
    }
}
