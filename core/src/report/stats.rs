//! The statistics reports use: mean and sample standard deviation, Student's t quantiles and
//! paired differences with their 95 % confidence intervals.

use serde::Serialize;

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
