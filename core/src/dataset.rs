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

/// Bytes of one 32×32 RGB image (three 1024-byte planes).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// The folder name of the official CIFAR-10 binary release.
pub const CIFAR10_DIR_NAME: &str = "cifar-10-batches-bin";
/// The folder name of the official CIFAR-100 binary release.
pub const CIFAR100_DIR_NAME: &str = "cifar-100-binary";
/// Number of CIFAR-10 training batch files in the official release.
pub const CIFAR10_TRAIN_BATCHES: usize = 5;

/// Which of the two datasets a file or a task comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Cifar10,
    Cifar100,
}

impl DatasetKind {
    /// Bytes per record, labels included.
    pub fn record_bytes(self) -> usize {
        match self {
            DatasetKind::Cifar10 => 1 + IMAGE_BYTES,
            DatasetKind::Cifar100 => 2 + IMAGE_BYTES,
        }
    }

    /// Number of classes addressed by the (fine) label byte.
    pub fn num_classes(self) -> usize {
        match self {
            DatasetKind::Cifar10 => 10,
            DatasetKind::Cifar100 => 100,
        }
    }

    /// The official folder name of the binary release.
    pub fn dir_name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => CIFAR10_DIR_NAME,
            DatasetKind::Cifar100 => CIFAR100_DIR_NAME,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
        }
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Cifar10, DatasetKind::Cifar100];
}

/// Not `cifar10` or `cifar100`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dataset `{0}`: use `cifar10` or `cifar100`")]
pub struct UnknownDataset(pub String);

impl std::str::FromStr for DatasetKind {
    type Err = UnknownDataset;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(DatasetKind::Cifar10),
            "cifar100" | "cifar-100" => Ok(DatasetKind::Cifar100),
            _ => Err(UnknownDataset(text.to_string())),
        }
    }
}
