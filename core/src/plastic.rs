//! The non-learned settings of the NDHTL plastic layer and the training loss (spec §3, D-1, D-6,
//! D-8, D-12). The layer itself is in the agent (`ndhtl_agent::model::plastic`).

use serde::{Deserialize, Serialize};

/// Which plasticity rule updates H (spec D-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PlasticityRule {
    /// Retroactive neuromodulation with an eligibility trace, Eqs. (3)–(4). The default.
    Retroactive,
    /// Backpropamine simple neuromodulation: H ← clamp(H + M ⊙ Q). No eligibility trace.
    Simple,
}

/// Post-synaptic activity x_j of the plastic layer (spec D-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PostActivity {
    Softmax,
    Tanh,
}

/// Whether one trace is shared by the batch or each batch slot has its own (spec D-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TraceMode {
    /// One D×C trace per task, updated with batch means. Equals the paper at B = 1.
    Shared,
    /// One trace per batch slot (Miconi's batched convention); evaluation uses their mean.
    PerSample,
}

/// The non-learned settings of the plastic layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlasticConfig {
    pub rule: PlasticityRule,
    /// One modulation value per output class (M ∈ ℝ^C) instead of a scalar.
    pub fanout: bool,
    pub post: PostActivity,
    pub trace: TraceMode,
    /// κ: H is clamped to [−κ, κ].
    pub clip: f32,
}

impl Default for PlasticConfig {
    fn default() -> Self {
        PlasticConfig {
            rule: PlasticityRule::Retroactive,
            fanout: false,
            post: PostActivity::Softmax,
            trace: TraceMode::Shared,
            clip: 0.5,
        }
    }
}

/// Training loss (spec D-12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Cross-entropy on the logits (the paper's experimental setup; the default).
    Ce,
    /// Mean element-wise BCE of softmax(Z) against the one-hot target (Eq. 5 with N = C).
    Bce,
}
