//! NDHTL (Neuromodulated Dopamine Hebbian Transfer Learning) on Burn, and its STL baseline.
//!
//! - [`data`]: CIFAR readers, target tasks, generated data, download, input pipeline.
//!
//! The specification is `spec/NDHTL.md` of the project's shared folder; section numbers in the
//! docs (§3, D-6, …) refer to it.

pub mod allocator;
#[cfg(feature = "tch")]
pub mod aten_ops;
pub mod bench;
pub mod data;
pub mod device;
pub mod model;
pub mod plots;
pub mod process_setting;
pub mod report_bundle;
pub mod runtime;
pub mod train;
pub mod upload;
#[cfg(feature = "tch")]
pub mod upload_torch;
