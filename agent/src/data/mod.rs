//! Data: the CIFAR binary formats, a transfer task's images, generated data, the download path and the
//! input pipeline. Nothing here depends on Burn.

pub mod cifar_format;
pub mod download;
pub mod pipeline;
pub mod synth;
pub mod tasks;

pub use cifar_format::{DataError, DatasetKind, RawDataset, RawSplit, read_dataset};
pub use pipeline::{Augmentation, Batch, EpochPlan, Normalization, Prefetcher};
pub use tasks::{TaskError, TaskImages, TaskSpec};
