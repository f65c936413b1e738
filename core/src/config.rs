//! Training configurations: source training (spec §5.1) and fine-tuning (spec §4, §5.2).
//!
//! These are the canonical job configurations: serialisable, validated, with the spec's
//! defaults. Sweeps expand into them and hash them.

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::plastic::{LossKind, PlasticConfig, PlasticityRule};

/// Fine-tuning method.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Standard transfer learning: a fresh Linear head, one SGD step per batch.
    Stl,
    /// The plastic head with the Hebbian trace, one backward pass every K steps.
    Ndhtl,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Stl => "stl",
            Method::Ndhtl => "ndhtl",
        }
    }
}

/// Fine-tune settings only NDHTL reads (sweep names). An STL job has them at their defaults,
/// and reports show them as `n/a` for STL.
pub const NDHTL_ONLY_FIELDS: [&str; 11] = [
    "k",
    "eta",
    "fixed_eta",
    "rule",
    "fanout",
    "post",
    "trace",
    "clip",
    "reset",
    "loss_steps",
    "k_reduce",
];

/// When the Hebbian state is zeroed (spec D-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ResetPolicy {
    /// Only when fine-tuning on the task starts (the default).
    Task,
    /// At the start of every lifetime (epoch).
    Lifetime,
    /// After every backward pass, as in Miconi's episodes.
    Episode,
}

/// Which steps of a window contribute to its loss (spec D-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossSteps {
    /// Every step's loss (uses every label; the default).
    All,
    /// Only the last step's loss ("N/K cost-function calculations").
    Last,
}

/// How the window's step losses are combined (spec D-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KReduce {
    Sum,
    Mean,
}

/// A configuration that runs but is known to be useless or unstable: the field it concerns (a
/// sweep locates it in the file) and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid `{field}` = {value}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn check(
    ok: bool,
    field: &'static str,
    value: impl ToString,
    reason: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            field,
            value: value.to_string(),
            reason,
        })
    }
}

/// The checks both configurations share: the SGD settings, batch sizes and the per-class cap.
fn check_training(
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    batch_size: usize,
    eval_batch_size: usize,
    train_per_class: Option<usize>,
) -> Result<(), ConfigError> {
    check(
        lr > 0.0 && lr.is_finite(),
        "lr",
        lr,
        "must be a positive number",
    )?;
    check(
        (0.0..1.0).contains(&momentum),
        "momentum",
        momentum,
        "must be in [0, 1)",
    )?;
    check(
        weight_decay >= 0.0,
        "weight_decay",
        weight_decay,
        "must be ≥ 0",
    )?;
    check(
        batch_size >= 1,
        "batch_size",
        batch_size,
        "must be at least 1",
    )?;
    check(
        eval_batch_size >= 1,
        "eval_batch_size",
        eval_batch_size,
        "must be at least 1",
    )?;
    check(
        train_per_class != Some(0),
        "train_per_class",
        0,
        "must be at least 1",
    )
}

/// Source training on CIFAR-10 (spec §5.1; the recipe of \[90\]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Source classes (`cifar10`, or a subset such as `cifar10:cat,dog,ship`).
    pub task: String,
    pub epochs: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Epoch fractions at which lr is multiplied by `lr_gamma` (0.5, 0.75 → epochs 82, 123 of 164).
    pub lr_milestones: Vec<f64>,
    pub lr_gamma: f64,
    pub seed: u64,
    pub train_per_class: Option<usize>,
    pub augment: bool,
    pub eval_batch_size: usize,
    /// The data it trains on (the official CIFAR in the agent's data folder by default).
    #[serde(skip_serializing_if = "Dataset::is_cifar")]
    pub dataset: Dataset,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            task: "cifar10".into(),
            epochs: 164,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch_size: 128,
            lr_milestones: vec![0.5, 0.75],
            lr_gamma: 0.1,
            seed: 0,
            train_per_class: None,
            augment: true,
            eval_batch_size: 1000,
            dataset: Dataset::Cifar,
        }
    }
}

impl SourceConfig {
    /// A short name for people: the source task, seed and epochs.
    pub fn describe(&self) -> String {
        format!(
            "source model: {} seed {}, {} epoch{}",
            self.task,
            self.seed,
            self.epochs,
            if self.epochs == 1 { "" } else { "s" }
        )
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.epochs >= 1,
            "epochs",
            self.epochs,
            "must be at least 1",
        )?;
        check_training(
            self.lr,
            self.momentum,
            self.weight_decay,
            self.batch_size,
            self.eval_batch_size,
            self.train_per_class,
        )?;
        check(
            self.lr_milestones.iter().all(|m| (0.0..=1.0).contains(m)),
            "lr_milestones",
            format!("{:?}", self.lr_milestones),
            "are fractions of the epochs, each in [0, 1]",
        )
    }

    /// The learning rate of epoch `epoch` (0-based) under the step schedule.
    pub fn lr_at_epoch(&self, epoch: usize) -> f64 {
        let decays = self
            .lr_milestones
            .iter()
            .filter(|&&fraction| epoch >= (fraction * self.epochs as f64).round() as usize)
            .count();
        self.lr * self.lr_gamma.powi(decays as i32)
    }
}

/// Fine-tuning one target task with STL or NDHTL (spec §4, §5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Target task: `T1`..`T10` or a custom class list.
    pub task: String,
    pub method: Method,
    /// Number of lifetimes (epochs over the target training set).
    pub lifetimes: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    /// On the conv parameters, W and b; never on α, η or the modulator (spec D-19).
    pub weight_decay: f64,
    pub seed: u64,
    /// Keep the first N training images of each class (few-label transfer).
    pub train_per_class: Option<usize>,
    /// Train only the head (linear-probe ablation, spec D-15).
    pub freeze_features: bool,
    pub augment: bool,
    pub loss: LossKind,
    /// NDHTL: one backward pass every K steps.
    pub k: usize,
    /// NDHTL: η₀, the initial eligibility-trace rate.
    pub eta: f32,
    /// NDHTL: keep η at η₀ instead of learning it.
    pub fixed_eta: bool,
    /// NDHTL: rule, fan-out, post-activity, trace mode and clip κ.
    pub plastic: PlasticConfig,
    pub reset: ResetPolicy,
    pub loss_steps: LossSteps,
    pub k_reduce: KReduce,
    pub eval_batch_size: usize,
    /// The data it trains on (the official CIFAR in the agent's data folder by default).
    #[serde(skip_serializing_if = "Dataset::is_cifar")]
    pub dataset: Dataset,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            task: "T1".into(),
            method: Method::Ndhtl,
            lifetimes: 20,
            batch_size: 1,
            lr: 1e-4,
            momentum: 0.9,
            weight_decay: 5e-4,
            seed: 0,
            train_per_class: None,
            freeze_features: false,
            augment: true,
            loss: LossKind::Ce,
            k: 10,
            eta: 0.1,
            fixed_eta: false,
            plastic: PlasticConfig::default(),
            reset: ResetPolicy::Task,
            loss_steps: LossSteps::All,
            k_reduce: KReduce::Sum,
            eval_batch_size: 1000,
            dataset: Dataset::Cifar,
        }
    }
}

impl FinetuneConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.lifetimes >= 1,
            "lifetimes",
            self.lifetimes,
            "must be at least 1",
        )?;
        check_training(
            self.lr,
            self.momentum,
            self.weight_decay,
            self.batch_size,
            self.eval_batch_size,
            self.train_per_class,
        )?;
        check(self.k >= 1, "k", self.k, "must be at least 1")?;
        check(
            self.plastic.clip >= 0.0 && self.plastic.clip.is_finite(),
            "clip",
            self.plastic.clip,
            "must be a finite number ≥ 0",
        )?;
        check(self.eta.is_finite(), "eta", self.eta, "must be finite")
    }

    /// Known-useless choices: worth a warning, not an error (spec §3).
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        if self.method != Method::Ndhtl {
            return warnings;
        }
        let uses_the_trace = self.plastic.rule == PlasticityRule::Retroactive;
        if self.k < 3 && uses_the_trace {
            warnings.push(ConfigWarning {
                field: "k",
                message: format!(
                    "k = {}: with K < 3 η gets no gradient{} (spec §3); use K ≥ 3",
                    self.k,
                    if self.k < 2 {
                        " and neither does the modulator"
                    } else {
                        ""
                    }
                ),
            });
        }
        if self.plastic.clip == 0.0 {
            warnings.push(ConfigWarning {
                field: "clip",
                message: "clip = 0: H stays zero and NDHTL reduces to STL with a K-step window"
                    .into(),
            });
        }
        if uses_the_trace && !(0.0..=1.0).contains(&self.eta) {
            warnings.push(ConfigWarning {
                field: "eta",
                message: format!(
                    "eta = {}: E ← (1 − η)·E + η·Q (spec §3, P7) is a moving average only for η in (0, 1]; \
                     here the trace {}",
                    self.eta,
                    if self.eta < 0.0 || self.eta > 2.0 {
                        "grows by a factor |1 − η| > 1 per step until it overflows, unless \
                         training moves η back into range (never, with fixed_eta)"
                    } else {
                        "oscillates around Q instead of averaging it (1 − η < 0)"
                    }
                ),
            });
        }
        if uses_the_trace && self.eta == 0.0 && self.fixed_eta {
            warnings.push(ConfigWarning {
                field: "eta",
                message: "eta = 0 with fixed_eta: E, and so H, stay zero and NDHTL reduces to STL \
                          with a K-step window"
                    .into(),
            });
        }
        warnings
    }

    /// A short name for people, telling a job from its neighbours in a sweep: target, method,
    /// seed, NDHTL's K, η₀ and clip, the learning rate, and `fixed η` or a rule other than the
    /// paper's when set. As `ndhtl run` and `ndhtl status` name failed jobs.
    pub fn describe(&self) -> String {
        let mut words = format!("{} {} seed {}", self.task, self.method.as_str(), self.seed);
        if self.method == Method::Ndhtl {
            words.push_str(&format!(
                ", K {}, η {}{}, clip {}",
                self.k,
                self.eta,
                if self.fixed_eta { " fixed" } else { "" },
                self.plastic.clip
            ));
            if self.plastic.rule != PlasticityRule::Retroactive {
                words.push_str(", simple rule");
            }
        }
        words.push_str(&format!(", lr {}", self.lr));
        words
    }

    /// The number of steps in one backward window (STL: 1).
    pub fn window(&self) -> usize {
        match self.method {
            Method::Stl => 1,
            Method::Ndhtl => self.k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_schedule_steps_at_half_and_three_quarters() {
        let config = SourceConfig::default();
        assert_eq!(config.lr_at_epoch(0), 0.1);
        assert_eq!(config.lr_at_epoch(81), 0.1);
        assert!((config.lr_at_epoch(82) - 0.01).abs() < 1e-12);
        assert!((config.lr_at_epoch(123) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn defaults_are_the_spec_defaults_and_validate() {
        let config = FinetuneConfig::default();
        assert_eq!(
            (config.k, config.plastic.clip, config.eta, config.batch_size),
            (10, 0.5, 0.1, 1)
        );
        assert_eq!(config.lr, 1e-4);
        config.validate().unwrap();
        assert!(config.warnings().is_empty());
        SourceConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_values_name_their_field() {
        let config = FinetuneConfig {
            k: 0,
            ..Default::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "k");
        let mut config = FinetuneConfig::default();
        config.plastic.clip = -1.0;
        assert_eq!(config.validate().unwrap_err().field, "clip");
        let config = FinetuneConfig {
            lr: 0.0,
            ..Default::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "lr");
    }

    #[test]
    fn small_k_warns() {
        let config = FinetuneConfig {
            k: 1,
            ..Default::default()
        };
        assert!(config.warnings()[0].message.contains("modulator"));
        assert_eq!(config.warnings()[0].field, "k");
        let config = FinetuneConfig {
            k: 2,
            ..Default::default()
        };
        assert!(!config.warnings()[0].message.contains("modulator"));
        let config = FinetuneConfig {
            k: 1,
            method: Method::Stl,
            ..Default::default()
        };
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn a_job_is_described_by_what_tells_it_from_its_neighbours() {
        let ndhtl = FinetuneConfig {
            task: "T3".into(),
            seed: 4,
            eta: -1.0,
            fixed_eta: true,
            lr: 3e-4,
            ..Default::default()
        };
        assert_eq!(
            ndhtl.describe(),
            "T3 ndhtl seed 4, K 10, η -1 fixed, clip 0.5, lr 0.0003"
        );
        let mut simple = FinetuneConfig::default();
        simple.plastic.rule = PlasticityRule::Simple;
        assert_eq!(
            simple.describe(),
            "T1 ndhtl seed 0, K 10, η 0.1, clip 0.5, simple rule, lr 0.0001"
        );
        let stl = FinetuneConfig {
            method: Method::Stl,
            task: "cifar100:apple,bear".into(),
            ..Default::default()
        };
        assert_eq!(stl.describe(), "cifar100:apple,bear stl seed 0, lr 0.0001");
    }

    #[test]
    fn an_eta_outside_the_unit_interval_warns_when_the_trace_uses_it() {
        let warning_of = |eta: f32, fixed_eta: bool, rule: PlasticityRule| {
            let mut config = FinetuneConfig {
                eta,
                fixed_eta,
                ..Default::default()
            };
            config.plastic.rule = rule;
            config.warnings()
        };
        for eta in [0.0, 0.1, 1.0] {
            assert!(
                warning_of(eta, false, PlasticityRule::Retroactive).is_empty(),
                "{eta}"
            );
        }
        let diverging = warning_of(-1.0, false, PlasticityRule::Retroactive);
        assert_eq!(diverging.len(), 1);
        assert_eq!(diverging[0].field, "eta");
        assert!(diverging[0].message.contains("overflows"), "{diverging:?}");
        let oscillating = warning_of(1.5, false, PlasticityRule::Retroactive);
        assert!(
            oscillating[0].message.contains("oscillates"),
            "{oscillating:?}"
        );
        assert!(
            warning_of(2.5, true, PlasticityRule::Retroactive)[0]
                .message
                .contains("overflows")
        );
        // η is not used by the simple rule, nor by STL.
        assert!(warning_of(-1.0, false, PlasticityRule::Simple).is_empty());
        let stl = FinetuneConfig {
            eta: -1.0,
            method: Method::Stl,
            ..Default::default()
        };
        assert!(stl.warnings().is_empty());
        // η₀ = 0 is learned away from zero, unless it is fixed.
        let frozen = warning_of(0.0, true, PlasticityRule::Retroactive);
        assert_eq!(frozen.len(), 1);
        assert!(frozen[0].message.contains("reduces to STL"), "{frozen:?}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<FinetuneConfig>(r#"{"kk": 3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `kk`"), "{err}");
        let parsed: FinetuneConfig = serde_json::from_str(r#"{"k": 3, "method": "stl"}"#).unwrap();
        assert_eq!((parsed.k, parsed.method), (3, Method::Stl));
    }
}
