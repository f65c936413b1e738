//! Expanding a parsed sweep into job configurations: deterministic, deduplicated, and counted
//! before anything is built, so an oversized sweep is refused without touching memory.
//!
//! Every parameter is an axis of JSON values written into the default configuration at its
//! field path. Method-specific parameters are normalised first: an STL job ignores K, η, the
//! clip and the other plastic settings, so they are reset to their defaults and the STL job is
//! one job, not one per K.

use std::collections::HashSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::param::{Checked, Distribution, Param, number_as};
use super::schema::{FinetuneAxes, SourceSection};
use crate::config::NDHTL_ONLY_FIELDS;
use crate::config::{FinetuneConfig, Method, SourceConfig};
use crate::dataset::Dataset;

/// The paper's ten target tasks, which `all` stands for.
pub const ALL_TARGETS: [&str; 10] = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10"];

/// How a random-search axis draws.
#[derive(Clone)]
pub(crate) enum Sampler {
    Range {
        low: f64,
        high: f64,
        log: bool,
        convert: fn(f64) -> Result<Value, String>,
    },
    Choice(Vec<Value>),
}

/// One parameter of the sweep, as JSON values.
#[derive(Clone)]
pub(crate) struct Axis {
    /// The sweep key (`k`, `clip`, `target`, …).
    pub name: &'static str,
    pub grid: Vec<Value>,
    pub sampler: Option<Sampler>,
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("sweep values serialise")
}

fn convert_number<T: Serialize + DeserializeOwned>(number: f64) -> Result<Value, String> {
    number_as::<T>(number).map(|value| to_value(&value))
}

fn axis<T: Serialize + DeserializeOwned + Checked + Clone>(
    name: &'static str,
    param: &Param<T>,
) -> Axis {
    match param {
        Param::Values(values) => Axis {
            name,
            grid: values.iter().map(to_value).collect(),
            sampler: None,
        },
        Param::Sampled(distribution) => Axis {
            name,
            grid: vec![Value::Null],
            sampler: Some(match distribution {
                Distribution::Uniform(low, high) | Distribution::LogUniform(low, high) => {
                    Sampler::Range {
                        low: *low,
                        high: *high,
                        log: matches!(distribution, Distribution::LogUniform(..)),
                        convert: convert_number::<T>,
                    }
                }
                Distribution::Choice(values) => {
                    Sampler::Choice(values.iter().map(to_value).collect())
                }
            }),
        },
    }
}

macro_rules! axes_of {
    ($section:expr; $($field:ident),* $(,)?) => {{
        let mut axes = Vec::new();
        $(if let Some(param) = &$section.$field {
            axes.push(axis(stringify!($field), param));
        })*
        axes
    }};
}

/// The fine-tune axes a section names, in a fixed order (targets vary slowest).
pub(crate) fn finetune_axes(section: &FinetuneAxes) -> Vec<Axis> {
    let mut axes = axes_of!(section;
        target, method, seed, lifetimes, batch_size, lr, momentum, weight_decay, train_per_class,
        freeze_features, augment, loss, k, eta, fixed_eta, rule, fanout, post, trace, clip,
        reset, loss_steps, k_reduce, eval_batch_size);
    for axis in &mut axes {
        if axis.name == "target" {
            axis.grid = expand_targets(&axis.grid);
        }
    }
    axes
}

pub(crate) fn source_axes(section: &SourceSection) -> Vec<Axis> {
    axes_of!(section;
        task, epochs, lr, momentum, weight_decay, batch_size, lr_gamma, seed, train_per_class,
        augment, eval_batch_size)
}

/// `all` → T1..T10; `t3` → `T3`; duplicates dropped.
fn expand_targets(values: &[Value]) -> Vec<Value> {
    let mut targets: Vec<String> = Vec::new();
    for value in values {
        let text = value.as_str().unwrap_or_default().trim();
        let names: Vec<String> = if text.eq_ignore_ascii_case("all") {
            ALL_TARGETS.iter().map(|t| t.to_string()).collect()
        } else if let Some(number) = text
            .strip_prefix(['t', 'T'])
            .filter(|n| n.parse::<u32>().is_ok())
        {
            vec![format!("T{number}")]
        } else {
            vec![text.to_string()]
        };
        for name in names {
            if !targets.contains(&name) {
                targets.push(name);
            }
        }
    }
    targets.into_iter().map(Value::String).collect()
}

/// Where a sweep key lives in a fine-tune configuration's JSON.
pub(crate) fn finetune_path(name: &str) -> Vec<&str> {
    match name {
        "target" => vec!["task"],
        "rule" | "fanout" | "post" | "trace" | "clip" => vec!["plastic", name],
        other => vec![other],
    }
}

fn set_path(json: &mut Value, path: &[&str], value: Value) {
    let mut node = json;
    for key in &path[..path.len() - 1] {
        node = node.get_mut(*key).expect("configuration path exists");
    }
    node[path[path.len() - 1]] = value;
}

fn get_path<'a>(json: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(json, |node, key| node.get(*key))
}

/// Whether two sweep values are the same (numbers compare by value: `0.1` and `1e-1` match).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || ((x - y).abs() <= 1e-12 * x.abs().max(y.abs())),
        _ => a == b,
    }
}

/// A combination to leave out: every named axis must match one of its values.
pub(crate) struct ExclusionRule {
    pub conditions: Vec<(Vec<&'static str>, Vec<Value>)>,
}

impl ExclusionRule {
    pub fn from_axes(axes: Vec<Axis>) -> Self {
        ExclusionRule {
            conditions: axes
                .into_iter()
                .map(|axis| (finetune_path(axis.name), axis.grid))
                .collect(),
        }
    }

    fn matches(&self, config: &Value) -> bool {
        self.conditions.iter().all(|(path, values)| {
            get_path(config, path)
                .is_some_and(|actual| values.iter().any(|v| same_value(v, actual)))
        })
    }
}

/// Jobs a block of axes implies before exclusions and dedup: the grid times the samples.
pub(crate) fn block_size(axes: &[Axis], samples: usize) -> u128 {
    axes.iter()
        .map(|axis| axis.grid.len() as u128)
        .product::<u128>()
        * samples as u128
}

/// Every combination of the axes' grids, the last axis fastest.
fn for_each_combination(axes: &[Axis], mut visit: impl FnMut(&[usize])) {
    if axes.iter().any(|axis| axis.grid.is_empty()) {
        return;
    }
    let mut index = vec![0usize; axes.len()];
    loop {
        visit(&index);
        let mut position = axes.len();
        loop {
            if position == 0 {
                return;
            }
            position -= 1;
            index[position] += 1;
            if index[position] < axes[position].grid.len() {
                break;
            }
            index[position] = 0;
        }
    }
}

fn draw(sampler: &Sampler, rng: &mut ChaCha8Rng) -> Result<Value, String> {
    use rand::Rng;
    match sampler {
        Sampler::Range {
            low,
            high,
            log,
            convert,
        } => {
            let x = if *log {
                rng.random_range(low.ln()..=high.ln()).exp()
            } else {
                rng.random_range(*low..=*high)
            };
            convert(x)
        }
        Sampler::Choice(values) => Ok(values[rng.random_range(0..values.len())].clone()),
    }
}

/// A configuration that failed its own validation, with the sweep key to blame.
#[derive(Debug)]
pub(crate) struct InvalidCombination {
    pub key: String,
    pub message: String,
}

/// Expands one block of fine-tune axes into configurations, appending the new ones (dedup by
/// canonical JSON in `seen`).
pub(crate) fn expand_finetunes(
    axes: &[Axis],
    samples: usize,
    sample_seed: u64,
    dataset: Dataset,
    exclusions: &[ExclusionRule],
    seen: &mut HashSet<String>,
    out: &mut Vec<FinetuneConfig>,
) -> Result<(), InvalidCombination> {
    let base = to_value(&FinetuneConfig {
        dataset,
        ..FinetuneConfig::default()
    });
    let defaults = to_value(&FinetuneConfig::default());
    for sample in 0..samples {
        // Each sample's draws depend only on (sample_seed, sample): the same sampled setting
        // runs on every grid point, and adding a grid axis does not change the draws.
        let mut rng = ChaCha8Rng::seed_from_u64(
            sample_seed ^ (sample as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut drawn = Vec::with_capacity(axes.len());
        for axis in axes {
            drawn.push(match &axis.sampler {
                Some(sampler) => {
                    Some(
                        draw(sampler, &mut rng).map_err(|message| InvalidCombination {
                            key: axis.name.to_string(),
                            message,
                        })?,
                    )
                }
                None => None,
            });
        }
        let mut failure = None;
        for_each_combination(axes, |index| {
            if failure.is_some() {
                return;
            }
            let mut json = base.clone();
            for (position, axis) in axes.iter().enumerate() {
                let value = drawn[position]
                    .clone()
                    .unwrap_or_else(|| axis.grid[index[position]].clone());
                set_path(&mut json, &finetune_path(axis.name), value);
            }
            if exclusions.iter().any(|rule| rule.matches(&json)) {
                return;
            }
            if json["method"] == Value::String(Method::Stl.as_str().into()) {
                for name in NDHTL_ONLY_FIELDS {
                    let path = finetune_path(name);
                    let default = get_path(&defaults, &path).expect("default").clone();
                    set_path(&mut json, &path, default);
                }
            }
            let config: FinetuneConfig = match serde_json::from_value(json) {
                Ok(config) => config,
                Err(error) => {
                    failure = Some(InvalidCombination {
                        key: "finetune".into(),
                        message: error.to_string(),
                    });
                    return;
                }
            };
            if let Err(error) = config.validate() {
                failure = Some(InvalidCombination {
                    key: error.field.to_string(),
                    message: error.to_string(),
                });
                return;
            }
            let canonical = serde_json::to_string(&config).expect("configurations serialise");
            if seen.insert(canonical) {
                out.push(config);
            }
        });
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
    Ok(())
}

/// Expands the source section into configurations (grid only).
pub(crate) fn expand_sources(
    axes: &[Axis],
    milestones: Option<&Vec<f64>>,
    dataset: Dataset,
) -> Result<Vec<SourceConfig>, InvalidCombination> {
    if let Some(axis) = axes.iter().find(|axis| axis.sampler.is_some()) {
        return Err(InvalidCombination {
            key: axis.name.to_string(),
            message: "source parameters take values or lists, not distributions".into(),
        });
    }
    let mut base = SourceConfig {
        dataset,
        ..SourceConfig::default()
    };
    if let Some(milestones) = milestones {
        base.lr_milestones = milestones.clone();
    }
    let base = to_value(&base);
    let mut sources = Vec::new();
    let mut seen = HashSet::new();
    let mut failure = None;
    for_each_combination(axes, |index| {
        if failure.is_some() {
            return;
        }
        let mut json = base.clone();
        for (position, axis) in axes.iter().enumerate() {
            json[axis.name] = axis.grid[index[position]].clone();
        }
        match serde_json::from_value::<SourceConfig>(json) {
            Ok(config) => match config.validate() {
                Ok(()) => {
                    if seen.insert(serde_json::to_string(&config).expect("serialises")) {
                        sources.push(config);
                    }
                }
                Err(error) => {
                    failure = Some(InvalidCombination {
                        key: error.field.to_string(),
                        message: error.to_string(),
                    })
                }
            },
            Err(error) => {
                failure = Some(InvalidCombination {
                    key: "source".into(),
                    message: error.to_string(),
                })
            }
        }
    });
    match failure {
        Some(failure) => Err(failure),
        None => Ok(sources),
    }
}
