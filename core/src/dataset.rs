//! Which data a job trains on. It is part of the job's identity: a result on generated data is
//! never reused for a sweep on the real CIFAR data.

use serde::{Deserialize, Serialize};

/// Generated data in the official CIFAR binary layouts (`ndhtl data synth`): class-dependent
/// colours and shapes, learnable far above chance, the same bytes on every machine for the same
/// settings. Agents generate it themselves, so a sweep on it needs no data anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticData {
    pub seed: u64,
    pub cifar10_train_per_class: usize,
    pub cifar10_test_per_class: usize,
    pub cifar100_train_per_class: usize,
    pub cifar100_test_per_class: usize,
}

impl Default for SyntheticData {
    fn default() -> Self {
        SyntheticData {
            seed: 0,
            cifar10_train_per_class: 200,
            cifar10_test_per_class: 50,
            cifar100_train_per_class: 60,
            cifar100_test_per_class: 20,
        }
    }
}

/// The data of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Dataset {
    /// The official CIFAR-10/100 binaries, in the data folder of the machine that runs the job.
    #[default]
    Cifar,
    /// Generated data, made by the machine that runs the job.
    Synthetic(SyntheticData),
}

impl Dataset {
    pub fn is_cifar(&self) -> bool {
        matches!(self, Dataset::Cifar)
    }

    /// A short label for tables and folder names: `cifar`, or `synthetic-<hash prefix>`.
    pub fn label(&self) -> String {
        match self {
            Dataset::Cifar => "cifar".into(),
            Dataset::Synthetic(settings) => {
                format!("synthetic-{}", &crate::ids::content_hash(settings)[..12])
            }
        }
    }
}
