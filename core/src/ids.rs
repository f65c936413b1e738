//! Ids derived from content: the same configuration always gets the same id, whichever sweep
//! asks for it, so its result can be reused (dedup) and reports are stable across runs.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The version of the training code that results depend on. Part of every job id: a change of
/// the training semantics bumps it, so old results are not reused for new code.
///
/// 2: fine-tunes train the source features (before, a bug kept them constant).
pub const TRAINING_CODE_VERSION: &str = "ndhtl-train-2";

/// SHA-256 (hex) of a value's canonical JSON. Struct fields serialise in declaration order and
/// maps must be ordered (BTreeMap), so the bytes are canonical for our configuration types.
pub fn content_hash<T: Serialize>(value: &T) -> String {
    let canonical = serde_json::to_vec(value).expect("configurations serialise to JSON");
    hex::encode(Sha256::digest(canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FinetuneConfig;

    #[test]
    fn equal_configurations_hash_equal_and_any_change_changes_the_hash() {
        let a = FinetuneConfig::default();
        assert_eq!(content_hash(&a), content_hash(&FinetuneConfig::default()));
        let b = FinetuneConfig {
            k: 11,
            ..FinetuneConfig::default()
        };
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a).len(), 64);
    }
}
