//! Text helpers the report renderers share: cells, CSV fields and LaTeX.

use super::stats::MeanStd;

/// `mean ± std` (just the mean for one value), `—` for nothing.
pub fn mean_std_cell(value: Option<MeanStd>, decimals: usize) -> String {
    match value {
        Some(m) if m.n > 1 => format!("{:.decimals$} ± {:.decimals$}", m.mean, m.std),
        Some(m) => format!("{:.decimals$}", m.mean),
        None => "—".into(),
    }
}

/// The same in LaTeX math.
pub fn mean_std_latex(value: Option<MeanStd>, decimals: usize) -> String {
    match value {
        Some(m) if m.n > 1 => format!("{:.decimals$} $\\pm$ {:.decimals$}", m.mean, m.std),
        Some(m) => format!("{:.decimals$}", m.mean),
        None => "--".into(),
    }
}

/// Escapes LaTeX's special characters in plain text.
pub fn latex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '±' => out.push_str("$\\pm$"),
            'Δ' => out.push_str("$\\Delta$"),
            'η' => out.push_str("$\\eta$"),
            '—' => out.push_str("--"),
            _ => out.push(c),
        }
    }
    out
}

/// A CSV field, quoted when it needs to be.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `" (2/3)"` when some jobs of a cell are unfinished, nothing when all are done.
pub fn progress_suffix(finished: usize, total: usize) -> String {
    if finished < total {
        format!(" ({finished}/{total})")
    } else {
        String::new()
    }
}

/// The report's first line about unfinished jobs, empty when all are done.
pub fn progress_note(finished: usize, total: usize) -> String {
    if finished < total {
        format!(
            "**Partial: {finished} of {total} jobs finished**; the numbers below cover the finished ones, and done/total counts mark what is missing.\n\n"
        )
    } else {
        String::new()
    }
}

/// The LaTeX table preamble: a booktabs tabular with `columns` columns, first left-aligned.
pub fn latex_begin(columns: usize) -> String {
    format!(
        "\\begin{{tabular}}{{l{}}}\n\\toprule\n",
        "r".repeat(columns.saturating_sub(1))
    )
}

pub const LATEX_END: &str = "\\bottomrule\n\\end{tabular}\n";
