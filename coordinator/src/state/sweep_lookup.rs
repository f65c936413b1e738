//! Which sweep a user means: its id (`smoke-27ee004856`), its name (`smoke`), or a prefix of its
//! id that only it has (`smoke-27e`), as `ndhtl status`, `report` and `cancel` accept them.

use crate::domain::Sweep;
use crate::error::{CoordinatorError, Result};

/// What a name held by several sweeps (the same YAML edited and submitted again) refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedName {
    /// The latest submitted of them: for reads (status, reports), where "smoke" means the
    /// smoke sweep just run.
    Latest,
    /// None: refused as ambiguous, for what cannot be undone (cancel).
    Refused,
}

/// Finds the sweep `wanted` names, by the first rule that matches: the exact id; the exact name
/// (one sweep, or several as `shared_name` says); a prefix of exactly one sweep's id. A prefix
/// of several ids is ambiguous, and the error lists them.
pub fn find_sweep<'a>(
    sweeps: impl IntoIterator<Item = &'a Sweep>,
    wanted: &str,
    shared_name: SharedName,
) -> Result<&'a Sweep> {
    let sweeps: Vec<&Sweep> = sweeps.into_iter().collect();
    if let Some(sweep) = sweeps.iter().find(|sweep| sweep.id == wanted) {
        return Ok(sweep);
    }
    let mut named: Vec<&Sweep> = sweeps
        .iter()
        .copied()
        .filter(|sweep| sweep.name == wanted)
        .collect();
    named.sort_by_key(|sweep| sweep.sequence);
    match (named.as_slice(), shared_name) {
        ([], _) => {}
        ([only], _) => return Ok(only),
        ([.., latest], SharedName::Latest) => return Ok(latest),
        (several, SharedName::Refused) => return Err(ambiguous(wanted, "is the name of", several)),
    }
    let mut prefixed: Vec<&Sweep> = sweeps
        .iter()
        .copied()
        .filter(|sweep| !wanted.is_empty() && sweep.id.starts_with(wanted))
        .collect();
    prefixed.sort_by_key(|sweep| sweep.sequence);
    match prefixed.as_slice() {
        [] => Err(CoordinatorError::UnknownSweep(wanted.to_string())),
        [only] => Ok(only),
        several => Err(ambiguous(wanted, "begins the ids of", several)),
    }
}

fn ambiguous(wanted: &str, by: &'static str, sweeps: &[&Sweep]) -> CoordinatorError {
    debug_assert!(sweeps.len() > 1, "one match is not ambiguous");
    CoordinatorError::AmbiguousSweep {
        wanted: wanted.to_string(),
        by,
        candidates: sweeps
            .iter()
            .map(|sweep| sweep.id.clone())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(id: &str, name: &str, sequence: u64) -> Sweep {
        Sweep {
            id: id.into(),
            name: name.into(),
            priority: 0,
            jobs: Vec::new(),
            cancelled: false,
            sequence,
        }
    }

    fn found(sweeps: &[Sweep], wanted: &str, shared_name: SharedName) -> Result<String> {
        find_sweep(sweeps, wanted, shared_name).map(|sweep| sweep.id.clone())
    }

    #[test]
    fn a_sweep_is_found_by_id_name_or_a_prefix_only_it_has() {
        // Two runs of an edited smoke.yaml (the later listed first), and one grid.
        let sweeps = [
            sweep("smoke-9f00aa", "smoke", 7),
            sweep("smoke-27ee00", "smoke", 3),
            sweep("eta-k-5b1c2d", "eta-k", 5),
        ];
        for rule in [SharedName::Latest, SharedName::Refused] {
            assert_eq!(
                found(&sweeps, "smoke-27ee00", rule).unwrap(),
                "smoke-27ee00"
            );
            assert_eq!(found(&sweeps, "smoke-27", rule).unwrap(), "smoke-27ee00");
            assert_eq!(found(&sweeps, "eta-k", rule).unwrap(), "eta-k-5b1c2d");
            assert_eq!(found(&sweeps, "eta", rule).unwrap(), "eta-k-5b1c2d");
            assert!(matches!(
                found(&sweeps, "grid", rule),
                Err(CoordinatorError::UnknownSweep(wanted)) if wanted == "grid"
            ));
            assert!(matches!(
                found(&sweeps, "", rule),
                Err(CoordinatorError::UnknownSweep(_))
            ));
        }
        // A shared name is the latest submitted for reads, and ambiguous for a cancel.
        assert_eq!(
            found(&sweeps, "smoke", SharedName::Latest).unwrap(),
            "smoke-9f00aa"
        );
        let refused = found(&sweeps, "smoke", SharedName::Refused).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "`smoke` is the name of several sweeps: smoke-27ee00, smoke-9f00aa; give one's id (or a prefix only it has)"
        );
        // A prefix of several ids is ambiguous either way.
        let prefix = found(&sweeps, "smoke-", SharedName::Latest).unwrap_err();
        assert!(
            matches!(
                &prefix,
                CoordinatorError::AmbiguousSweep {
                    by: "begins the ids of",
                    ..
                }
            ),
            "{prefix}"
        );
    }

    #[test]
    fn an_id_wins_over_a_name_that_spells_it() {
        // A sweep named like another's id: the id is meant.
        let sweeps = [sweep("a-1", "b", 1), sweep("b-2", "a-1", 2)];
        assert_eq!(found(&sweeps, "a-1", SharedName::Refused).unwrap(), "a-1");
        assert_eq!(found(&sweeps, "b", SharedName::Refused).unwrap(), "a-1");
    }
}
