//! CIFAR served by the coordinator. It fetches each official archive once (from the CIFAR page
//! or a mirror), checks it against the published size and md5, keeps it as an artifact, and
//! tells agents which artifact to download. Agent nodes then need neither internet access nor
//! shared storage, and the upstream server sees one download per cluster, not one per pod.
//! On an air-gapped cluster, `--cifar-mirror` points the coordinator at any HTTP server inside
//! it that holds the two archives.
//!
//! [`DatasetRegistry`] is the pure part: what is stored, what is being fetched, what failed and
//! when to try again. The event loop persists what it returns and runs the fetches
//! ([`fetcher`]) on their own threads.

pub mod fetcher;

use std::collections::BTreeMap;

use ndhtl_core::dataset::DatasetKind;
use serde::{Deserialize, Serialize};

use crate::domain::ArtifactHash;
use crate::error::CoordinatorError;
use crate::state::Change;

/// A verified archive the coordinator keeps as an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDataset {
    pub dataset: DatasetKind,
    /// The official file name (`cifar-100-binary.tar.gz`).
    pub file_name: String,
    /// SHA-256 of the archive: the artifact agents download.
    pub artifact: ArtifactHash,
    pub bytes: u64,
    /// The published md5 it was checked against.
    pub md5: String,
    /// Where it came from: the URL fetched, or `pushed`.
    pub origin: String,
}

/// When the coordinator fetches the archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FetchPolicy {
    /// When an agent first asks for one.
    #[default]
    OnDemand,
    /// Both at start, so they are ready when the first agent asks.
    AtStart,
    /// Never: agents must have the data themselves (`ndhtl agent --data`).
    Off,
}

/// Where one dataset stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetState {
    Ready(StoredDataset),
    Fetching {
        since_ms: u64,
    },
    Failed {
        reason: String,
        /// A request after this starts a new fetch.
        retry_at_ms: u64,
    },
}

/// What an agent asking for a dataset is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetAnswer {
    /// Download this artifact.
    Ready(StoredDataset),
    /// Being fetched since then: ask again.
    Preparing { since_ms: u64 },
}

/// The datasets the coordinator serves.
#[derive(Debug, Clone)]
pub struct DatasetRegistry {
    policy: FetchPolicy,
    /// How long a failed fetch waits before a request may start another.
    retry_after_ms: u64,
    states: BTreeMap<DatasetKind, DatasetState>,
}

impl DatasetRegistry {
    /// A registry holding what was persisted.
    pub fn restore(policy: FetchPolicy, retry_after_ms: u64, stored: Vec<StoredDataset>) -> Self {
        let states = stored
            .into_iter()
            .map(|stored| (stored.dataset, DatasetState::Ready(stored)))
            .collect();
        DatasetRegistry {
            policy,
            retry_after_ms,
            states,
        }
    }

    pub fn policy(&self) -> FetchPolicy {
        self.policy
    }

    pub fn state(&self, dataset: DatasetKind) -> Option<&DatasetState> {
        self.states.get(&dataset)
    }

    /// The fetches to start when the coordinator starts (marked as running).
    pub fn fetches_at_start(&mut self, now_ms: u64) -> Vec<DatasetKind> {
        if self.policy != FetchPolicy::AtStart {
            return Vec::new();
        }
        DatasetKind::ALL
            .into_iter()
            .filter(|dataset| self.begin_fetch_if_needed(*dataset, now_ms))
            .collect()
    }

    /// Whether a fetch of `dataset` must start now; marks it as running if so.
    fn begin_fetch_if_needed(&mut self, dataset: DatasetKind, now_ms: u64) -> bool {
        let due = match self.states.get(&dataset) {
            None => true,
            Some(DatasetState::Failed { retry_at_ms, .. }) => now_ms >= *retry_at_ms,
            Some(DatasetState::Ready(_) | DatasetState::Fetching { .. }) => false,
        };
        if due {
            self.states
                .insert(dataset, DatasetState::Fetching { since_ms: now_ms });
        }
        due
    }

    /// What to tell an agent that asks for `dataset`, and whether the event loop must start a
    /// fetch now.
    pub fn request(
        &mut self,
        dataset: DatasetKind,
        now_ms: u64,
    ) -> Result<(DatasetAnswer, bool), CoordinatorError> {
        if let Some(DatasetState::Ready(stored)) = self.states.get(&dataset) {
            return Ok((DatasetAnswer::Ready(stored.clone()), false));
        }
        if self.policy == FetchPolicy::Off {
            return Err(CoordinatorError::DatasetNotServed { dataset });
        }
        let start = self.begin_fetch_if_needed(dataset, now_ms);
        match self.states.get(&dataset) {
            Some(DatasetState::Fetching { since_ms }) => Ok((
                DatasetAnswer::Preparing {
                    since_ms: *since_ms,
                },
                start,
            )),
            Some(DatasetState::Failed {
                reason,
                retry_at_ms,
            }) => Err(CoordinatorError::DatasetUnavailable {
                dataset,
                reason: reason.clone(),
                retry_in_secs: retry_at_ms.saturating_sub(now_ms).div_ceil(1000),
            }),
            Some(DatasetState::Ready(_)) | None => {
                unreachable!("ready was answered above, and a missing entry starts a fetch")
            }
        }
    }

    /// A fetch ended. A stored archive is returned as the change to persist.
    pub fn fetch_finished(
        &mut self,
        dataset: DatasetKind,
        outcome: Result<StoredDataset, String>,
        now_ms: u64,
    ) -> Vec<Change> {
        debug_assert!(matches!(
            self.states.get(&dataset),
            Some(DatasetState::Fetching { .. })
        ));
        match outcome {
            Ok(stored) => {
                debug_assert_eq!(stored.dataset, dataset);
                self.states
                    .insert(dataset, DatasetState::Ready(stored.clone()));
                vec![Change::Dataset(stored)]
            }
            Err(reason) => {
                self.states.insert(
                    dataset,
                    DatasetState::Failed {
                        reason,
                        retry_at_ms: now_ms + self.retry_after_ms,
                    },
                );
                Vec::new()
            }
        }
    }

    /// Every dataset's state, absent ones left out.
    pub fn states(&self) -> impl Iterator<Item = (DatasetKind, &DatasetState)> {
        self.states.iter().map(|(dataset, state)| (*dataset, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY_MS: u64 = 60_000;

    fn stored(dataset: DatasetKind, artifact: &str) -> StoredDataset {
        StoredDataset {
            dataset,
            file_name: format!("{dataset}.tar.gz"),
            artifact: artifact.into(),
            bytes: 10,
            md5: "m".into(),
            origin: "test".into(),
        }
    }

    #[test]
    fn the_first_request_starts_one_fetch_and_later_ones_wait_for_it() {
        let mut registry = DatasetRegistry::restore(FetchPolicy::OnDemand, RETRY_MS, vec![]);
        let (answer, start) = registry.request(DatasetKind::Cifar100, 1_000).unwrap();
        assert_eq!(answer, DatasetAnswer::Preparing { since_ms: 1_000 });
        assert!(start);
        let (answer, start) = registry.request(DatasetKind::Cifar100, 5_000).unwrap();
        assert_eq!(answer, DatasetAnswer::Preparing { since_ms: 1_000 });
        assert!(!start, "one fetch per dataset");

        let done = stored(DatasetKind::Cifar100, "aa");
        let changes = registry.fetch_finished(DatasetKind::Cifar100, Ok(done.clone()), 9_000);
        assert_eq!(changes, vec![Change::Dataset(done.clone())]);
        let (answer, start) = registry.request(DatasetKind::Cifar100, 9_500).unwrap();
        assert_eq!(answer, DatasetAnswer::Ready(done));
        assert!(!start);
        assert!(
            registry.state(DatasetKind::Cifar10).is_none(),
            "CIFAR-10 was never asked for"
        );
    }

    #[test]
    fn a_failed_fetch_is_reported_then_retried_after_the_delay() {
        let mut registry = DatasetRegistry::restore(FetchPolicy::OnDemand, RETRY_MS, vec![]);
        let _ = registry.request(DatasetKind::Cifar10, 0).unwrap();
        assert!(
            registry
                .fetch_finished(DatasetKind::Cifar10, Err("HTTP status 503".into()), 1_000)
                .is_empty()
        );
        let error = registry.request(DatasetKind::Cifar10, 2_000).unwrap_err();
        assert_eq!(
            error,
            CoordinatorError::DatasetUnavailable {
                dataset: DatasetKind::Cifar10,
                reason: "HTTP status 503".into(),
                retry_in_secs: 59,
            }
        );
        let (answer, start) = registry
            .request(DatasetKind::Cifar10, 1_000 + RETRY_MS)
            .unwrap();
        assert_eq!(
            answer,
            DatasetAnswer::Preparing {
                since_ms: 1_000 + RETRY_MS
            }
        );
        assert!(start, "the retry delay has passed: a new fetch");
    }

    #[test]
    fn with_fetching_off_nothing_is_fetched_but_stored_archives_are_still_served() {
        let kept = stored(DatasetKind::Cifar10, "bb");
        let mut registry = DatasetRegistry::restore(FetchPolicy::Off, RETRY_MS, vec![kept.clone()]);
        assert_eq!(registry.fetches_at_start(0), vec![]);
        assert_eq!(
            registry.request(DatasetKind::Cifar100, 0).unwrap_err(),
            CoordinatorError::DatasetNotServed {
                dataset: DatasetKind::Cifar100
            }
        );
        assert_eq!(
            registry.request(DatasetKind::Cifar10, 0).unwrap(),
            (DatasetAnswer::Ready(kept), false)
        );
    }

    #[test]
    fn at_start_fetches_what_is_not_stored_yet() {
        let kept = stored(DatasetKind::Cifar10, "cc");
        let mut registry = DatasetRegistry::restore(FetchPolicy::AtStart, RETRY_MS, vec![kept]);
        assert_eq!(registry.fetches_at_start(7), vec![DatasetKind::Cifar100]);
        assert_eq!(
            registry.state(DatasetKind::Cifar100),
            Some(&DatasetState::Fetching { since_ms: 7 })
        );
        let (_, start) = registry.request(DatasetKind::Cifar100, 8).unwrap();
        assert!(!start, "already fetching");
    }
}
