//! The coordinator's one error enum. Each variant maps to one gRPC status code in the service
//! layer, so a client can tell a refused stale report from an unknown agent from bad input.

use ndhtl_core::dataset::DatasetKind;

use crate::domain::{AgentId, JobId, SweepId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    /// → `NOT_FOUND`; the agent should register (again).
    #[error("unknown agent `{0}`: register first")]
    UnknownAgent(AgentId),
    /// → `NOT_FOUND`.
    #[error("unknown job `{0}`")]
    UnknownJob(JobId),
    /// → `NOT_FOUND`.
    #[error("unknown sweep `{0}`")]
    UnknownSweep(SweepId),
    /// → `FAILED_PRECONDITION`: a report from an attempt that no longer holds the lease. It is
    /// refused, never merged; the agent must stop that attempt.
    #[error("job `{job}` attempt {attempt} does not hold a lease of agent `{agent}` ({current})")]
    StaleAttempt {
        job: JobId,
        attempt: u32,
        agent: AgentId,
        current: String,
    },
    /// → `INVALID_ARGUMENT`.
    #[error("agent `{agent}` has no slot {slot}: it registered {slots}")]
    NoSuchSlot {
        agent: AgentId,
        slot: u32,
        slots: u32,
    },
    /// → `FAILED_PRECONDITION`.
    #[error("slot {slot} of agent `{agent}` already runs job `{job}`")]
    SlotBusy {
        agent: AgentId,
        slot: u32,
        job: JobId,
    },
    /// → `FAILED_PRECONDITION`.
    #[error(
        "agent version {agent_version} cannot work with coordinator version {coordinator_version} (major.minor must match)"
    )]
    VersionMismatch {
        agent_version: String,
        coordinator_version: String,
    },
    /// → `INVALID_ARGUMENT`.
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
    /// → `INVALID_ARGUMENT`: a name or id prefix that fits several sweeps where one is needed.
    #[error(
        "`{wanted}` {by} several sweeps: {candidates}; give one's id (or a prefix only it has)"
    )]
    AmbiguousSweep {
        wanted: String,
        by: &'static str,
        candidates: String,
    },
    /// → `ALREADY_EXISTS`.
    #[error("sweep `{0}` already exists")]
    DuplicateSweep(SweepId),
    /// → `FAILED_PRECONDITION`.
    #[error(
        "sweep `{0}` was cancelled: its jobs are not retried; submit the sweep under another name to run them"
    )]
    SweepCancelled(SweepId),
    /// → `FAILED_PRECONDITION`: nothing will change until someone acts.
    #[error(
        "the coordinator does not serve {dataset}: it runs with `--cifar-fetch off`; give agents the data with `--data`, or start the coordinator with `--cifar-fetch on-demand`"
    )]
    DatasetNotServed { dataset: DatasetKind },
    /// → `UNAVAILABLE`: the last fetch failed; the next request after the delay tries again.
    #[error(
        "{dataset} is not available yet: the coordinator's fetch failed ({reason}); it tries again in {retry_in_secs} s"
    )]
    DatasetUnavailable {
        dataset: DatasetKind,
        reason: String,
        retry_in_secs: u64,
    },
}

impl CoordinatorError {
    /// Whether the same call can succeed later without the caller changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CoordinatorError::SlotBusy { .. } | CoordinatorError::DatasetUnavailable { .. }
        )
    }
}

pub type Result<T> = std::result::Result<T, CoordinatorError>;
