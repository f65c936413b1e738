//! What a run reports; the records live in `ndhtl-core` so the coordinator can store them.

pub use ndhtl_core::metrics::*;
