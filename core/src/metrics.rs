//! What a run reports: one record per lifetime (epoch), and a summary.

use serde::{Deserialize, Serialize};

/// Evaluation on the task's test images (spec §4.3), percentages for accuracies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy over the test images.
    pub loss: f64,
    pub top1: f64,
    /// Top-5 of the task's classes (chance is 50 % with 10 classes).
    pub top5: f64,
    pub images: usize,
}

/// One JSON line per lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifetimeMetrics {
    /// 1-based lifetime (epoch) number.
    pub lifetime: usize,
    pub val_loss: f64,
    pub val_top1: f64,
    pub val_top5: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    /// Forward steps (mini-batches) this lifetime.
    pub steps: usize,
    /// Backward passes this lifetime (STL: = steps; NDHTL: ⌈steps/K⌉).
    pub backward_passes: usize,
    pub lr: f64,
    /// NDHTL diagnostics (absent for STL and source training).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alpha_abs_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hebb_abs_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub modulator_mean: Option<f64>,
    pub train_seconds: f64,
    pub train_images_per_second: f64,
}

/// The end-of-run summary: final and best lifetime, both labelled (spec D-16).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub lifetimes: usize,
    pub final_top1: f64,
    pub final_top5: f64,
    pub final_val_loss: f64,
    pub best_top1: f64,
    pub best_top1_lifetime: usize,
    pub best_top5: f64,
}

impl RunSummary {
    pub fn from_history(history: &[LifetimeMetrics]) -> Option<RunSummary> {
        let last = history.last()?;
        let best = history.iter().max_by(|a, b| {
            a.val_top1
                .total_cmp(&b.val_top1)
                .then(b.lifetime.cmp(&a.lifetime))
        })?;
        Some(RunSummary {
            lifetimes: history.len(),
            final_top1: last.val_top1,
            final_top5: last.val_top5,
            final_val_loss: last.val_loss,
            best_top1: best.val_top1,
            best_top1_lifetime: best.lifetime,
            best_top5: history.iter().map(|m| m.val_top5).fold(f64::MIN, f64::max),
        })
    }
}
