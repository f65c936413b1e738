//! The parameters a report can group by, under the names the sweep language uses (`target`,
//! `eta`, `k`, `clip`, …), read from a fine-tune's configuration, with a display form and a
//! natural order (numbers by value, `T2` before `T10`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::{FinetuneConfig, Method, NDHTL_ONLY_FIELDS};

/// How reports show a setting that does not apply (NDHTL's settings of an STL job).
pub const NOT_APPLICABLE: &str = "n/a";

/// Every parameter of a fine-tune, in the order reports list them.
pub const PARAMETERS: &[&str] = &[
    "target",
    "method",
    "eta",
    "k",
    "clip",
    "lr",
    "lifetimes",
    "batch_size",
    "momentum",
    "weight_decay",
    "train_per_class",
    "freeze_features",
    "augment",
    "loss",
    "fixed_eta",
    "rule",
    "fanout",
    "post",
    "trace",
    "reset",
    "loss_steps",
    "k_reduce",
    "eval_batch_size",
    "dataset",
    "seed",
];

/// Where each parameter lives in the configuration's JSON: top level, or inside `plastic`.
const PLASTIC_PARAMETERS: &[&str] = &["rule", "fanout", "post", "trace", "clip"];

pub fn is_parameter(name: &str) -> bool {
    PARAMETERS.contains(&name)
}

/// The parameters of one configuration, as display strings keyed by name; NDHTL's settings
/// are [`NOT_APPLICABLE`] for STL.
pub fn parameters_of(config: &FinetuneConfig) -> BTreeMap<&'static str, String> {
    let json = serde_json::to_value(config).expect("configurations serialise");
    PARAMETERS
        .iter()
        .map(|&name| {
            if config.method == Method::Stl && NDHTL_ONLY_FIELDS.contains(&name) {
                return (name, NOT_APPLICABLE.to_string());
            }
            let value = match name {
                "target" => json.get("task").cloned(),
                "dataset" => Some(Value::String(config.dataset.label())),
                _ if PLASTIC_PARAMETERS.contains(&name) => {
                    json.get("plastic").and_then(|p| p.get(name)).cloned()
                }
                _ => json.get(name).cloned(),
            };
            (name, display(value.as_ref().unwrap_or(&Value::Null)))
        })
        .collect()
}

/// A value as reports print it: strings bare, numbers in their shortest form, `none` for null.
pub fn display(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "none".into(),
        Value::Number(number) => match number.as_f64() {
            // f32 settings (η, clip) widen to f64 with noise: print them at f32 precision.
            Some(float) if !number.is_i64() && !number.is_u64() => {
                let narrow = float as f32;
                if f64::from(narrow) == float || (f64::from(narrow) - float).abs() < 1e-9 {
                    format!("{narrow}")
                } else {
                    format!("{float}")
                }
            }
            _ => number.to_string(),
        },
        other => other.to_string(),
    }
}

/// Natural order of displayed values: numbers by value; otherwise text, with a trailing number
/// compared by value (`T2` < `T10`).
pub fn compare_values(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.total_cmp(&y);
    }
    let split = |text: &str| {
        let digits = text.len() - text.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = text.split_at(text.len() - digits);
        (prefix.to_string(), number.parse::<u64>().ok())
    };
    let (prefix_a, number_a) = split(a);
    let (prefix_b, number_b) = split(b);
    prefix_a
        .cmp(&prefix_b)
        .then(number_a.cmp(&number_b))
        .then_with(|| a.cmp(b))
}

/// The parameters that take more than one value among `configurations`, in report order,
/// leaving out `excluded`. [`NOT_APPLICABLE`] differs from nothing: K is not varying in a sweep
/// of STL and NDHTL at one K.
pub fn varying<'a>(
    configurations: impl IntoIterator<Item = &'a BTreeMap<&'static str, String>>,
    excluded: &[&str],
) -> Vec<&'static str> {
    let mut first: BTreeMap<&'static str, &String> = BTreeMap::new();
    let mut varies: Vec<&'static str> = Vec::new();
    for parameters in configurations {
        for (&name, value) in parameters {
            if value == NOT_APPLICABLE {
                continue;
            }
            match first.get(name) {
                None => {
                    first.insert(name, value);
                }
                Some(seen) if *seen != value && !varies.contains(&name) => varies.push(name),
                Some(_) => {}
            }
        }
    }
    PARAMETERS
        .iter()
        .copied()
        .filter(|name| varies.contains(name) && !excluded.contains(name))
        .collect()
}

/// Sorted distinct values.
pub fn distinct_sorted<'a>(values: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut values: Vec<String> = values.into_iter().cloned().collect();
    values.sort_by(|a, b| compare_values(a, b));
    values.dedup();
    values
}
