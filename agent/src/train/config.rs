//! Training configurations. They live in `ndhtl-core` (no Burn), so the coordinator can expand,
//! validate and hash them; re-exported here where the training code expects them.

pub use ndhtl_core::config::*;
