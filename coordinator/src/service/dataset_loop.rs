//! The event loop's side of the served datasets: the pure [`DatasetRegistry`], and the fetches
//! it asks for, each on a thread of its own that reports back through the loop's channel, so
//! the loop never waits on the network.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;

use ndhtl_core::dataset::DatasetKind;

use super::event_loop::Command;
use crate::datasets::fetcher::{DatasetSource, Progress, fetch_into_artifacts};
use crate::datasets::{DatasetAnswer, DatasetRegistry, DatasetState, FetchPolicy, StoredDataset};
use crate::error::CoordinatorError;
use crate::state::Change;

/// What an agent asking for a dataset is told, with the fetch's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetReply {
    pub answer: DatasetAnswer,
    pub fetched_bytes: u64,
    /// The archive's published size, when known.
    pub total_bytes: u64,
}

/// One served dataset, for status tables and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetView {
    pub dataset: DatasetKind,
    /// `ready`, `fetching` or `failed`.
    pub state: &'static str,
    /// The origin when ready; the error when failed.
    pub detail: String,
    /// Stored bytes when ready, fetched bytes while fetching.
    pub bytes: u64,
}

pub(super) struct LoopDatasets {
    registry: DatasetRegistry,
    /// Present when the coordinator fetches datasets, with the channel fetches report into.
    fetching: Option<(DatasetSource, Sender<Command>)>,
    progress: BTreeMap<DatasetKind, Progress>,
}

impl LoopDatasets {
    pub(super) fn new(
        fetching: Option<(DatasetSource, Sender<Command>)>,
        stored: Vec<StoredDataset>,
    ) -> Self {
        let (policy, retry_after_ms) = match &fetching {
            Some((source, _)) => (source.policy, source.retry_after.as_millis() as u64),
            None => (FetchPolicy::Off, 0),
        };
        LoopDatasets {
            registry: DatasetRegistry::restore(policy, retry_after_ms, stored),
            fetching,
            progress: BTreeMap::new(),
        }
    }

    /// Starts the fetches the policy wants at start.
    pub fn start(&mut self, now_ms: u64) {
        for dataset in self.registry.fetches_at_start(now_ms) {
            self.spawn_fetch(dataset, now_ms);
        }
    }

    pub fn request(
        &mut self,
        dataset: DatasetKind,
        now_ms: u64,
    ) -> Result<DatasetReply, CoordinatorError> {
        let (answer, start) = self.registry.request(dataset, now_ms)?;
        if start {
            self.spawn_fetch(dataset, now_ms);
        }
        let total_bytes = match &answer {
            DatasetAnswer::Ready(stored) => stored.bytes,
            DatasetAnswer::Preparing { .. } => self
                .fetching
                .as_ref()
                .and_then(|(source, _)| source.archives.get(&dataset))
                .map_or(0, |spec| spec.size),
        };
        let fetched_bytes = match &answer {
            DatasetAnswer::Ready(stored) => stored.bytes,
            DatasetAnswer::Preparing { .. } => self.fetched(dataset),
        };
        Ok(DatasetReply {
            answer,
            fetched_bytes,
            total_bytes,
        })
    }

    fn fetched(&self, dataset: DatasetKind) -> u64 {
        self.progress
            .get(&dataset)
            .map_or(0, |progress| progress.load(Ordering::Relaxed))
    }

    pub fn finished(
        &mut self,
        dataset: DatasetKind,
        outcome: Result<StoredDataset, String>,
        now_ms: u64,
    ) -> Vec<Change> {
        self.progress.remove(&dataset);
        self.registry.fetch_finished(dataset, outcome, now_ms)
    }

    pub fn views(&self) -> Vec<DatasetView> {
        self.registry
            .states()
            .map(|(dataset, state)| match state {
                DatasetState::Ready(stored) => DatasetView {
                    dataset,
                    state: "ready",
                    detail: stored.origin.clone(),
                    bytes: stored.bytes,
                },
                DatasetState::Fetching { .. } => DatasetView {
                    dataset,
                    state: "fetching",
                    detail: String::new(),
                    bytes: self.fetched(dataset),
                },
                DatasetState::Failed { reason, .. } => DatasetView {
                    dataset,
                    state: "failed",
                    detail: reason.clone(),
                    bytes: 0,
                },
            })
            .collect()
    }

    fn spawn_fetch(&mut self, dataset: DatasetKind, now_ms: u64) {
        let Some((source, sender)) = &self.fetching else {
            debug_assert!(false, "the registry starts no fetch when fetching is off");
            return;
        };
        let progress: Progress = Arc::new(AtomicU64::new(0));
        self.progress.insert(dataset, Arc::clone(&progress));
        let spec = source.archives.get(&dataset).cloned();
        let options = source.fetch.clone();
        let artifacts = source.artifacts.clone();
        let sender = sender.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ndhtl-fetch-{dataset}"))
            .spawn(move || {
                let outcome = match spec {
                    Some(spec) => {
                        tracing::info!(%dataset, url = %spec.url, "fetching the archive to serve it to agents");
                        fetch_into_artifacts(&spec, &options, &artifacts, progress).map_err(
                            |error| {
                                tracing::warn!(%dataset, %error, retryable = error.is_retryable(), "fetching the archive failed");
                                error.to_string()
                            },
                        )
                    }
                    None => Err(format!("no archive is configured for {dataset}")),
                };
                if let Ok(stored) = &outcome {
                    tracing::info!(%dataset, artifact = %stored.artifact, bytes = stored.bytes, "archive stored; serving it to agents");
                }
                let _ = sender.send(Command::DatasetFetched { dataset, outcome });
            });
        if let Err(error) = spawned {
            tracing::error!(%dataset, %error, "could not start a fetch thread");
            let reason = format!("could not start a fetch thread: {error}");
            let changes = self.finished(dataset, Err(reason), now_ms);
            debug_assert!(changes.is_empty(), "a failed fetch stores nothing");
        }
    }
}
