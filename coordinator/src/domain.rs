//! The coordinator's domain types: jobs, sweeps, agents, leases. Wire types stay in
//! `ndhtl-proto`; conversions live in one module of the service layer.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Content hash of a job's canonical configuration and the training code version.
pub type JobId = String;
pub type SweepId = String;
pub type AgentId = String;
/// SHA-256 (hex) of an artifact.
pub type ArtifactHash = String;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Trains a source model (its output artifact feeds fine-tunes).
    Source,
    /// Fine-tunes a target task from a source model.
    Finetune,
}

/// Device kinds an agent offers and a job may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// What a job needs from an agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// Required backend (`flex`, `tch`), or any.
    pub backend: Option<String>,
    /// Required device kind, or any.
    pub device: Option<DeviceKind>,
}

impl Resources {
    pub const ANY: Resources = Resources {
        backend: None,
        device: None,
    };
}

/// A job as a sweep expands it: immutable once submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: JobId,
    pub kind: JobKind,
    /// Canonical JSON of the ndhtl-core configuration.
    pub config_json: String,
    /// The job whose output this one starts from (a fine-tune's source job).
    pub depends_on: Option<JobId>,
    pub resources: Resources,
}

/// One attempt of a job, leased to one agent slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub agent: AgentId,
    pub slot: u32,
    pub attempt: u32,
    /// Virtual-clock milliseconds after which the lease expires unless a heartbeat extends it.
    pub deadline_ms: u64,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for an agent (and for its dependency, if any).
    Queued,
    Leased(Lease),
    Succeeded {
        attempt: u32,
        output: Option<ArtifactHash>,
    },
    Failed {
        attempt: u32,
        reason: String,
    },
    Cancelled,
}

impl JobState {
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Leased(_) => "running",
            JobState::Succeeded { .. } => "succeeded",
            JobState::Failed { .. } => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded { .. } | JobState::Failed { .. } | JobState::Cancelled
        )
    }
}

/// A job and everything the coordinator knows of it. This is what the store persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub spec: JobSpec,
    pub state: JobState,
    /// Attempts started so far (the next lease is attempt `attempts + 1`). Never reset: attempt
    /// numbers of a job do not repeat, since its metrics and summary are keyed by attempt.
    pub attempts: u32,
    /// `attempts` when the job was last queued afresh (by a sweep submitted again, or by a retry
    /// of failed jobs): `max_attempts` counts the attempts after it. 0 for a job never requeued.
    #[serde(default)]
    pub attempts_before_this_run: u32,
    /// Sweeps that asked for this job.
    pub sweeps: BTreeSet<SweepId>,
    /// Lifetimes reported so far (by any attempt: a resumed attempt continues the count).
    pub completed_lifetimes: u32,
    /// The latest checkpoint uploaded, with the lifetimes it holds, to resume a re-leased job.
    pub checkpoint: Option<(u32, ArtifactHash)>,
    /// Submission order, for a stable queue.
    pub sequence: u64,
}

impl Job {
    /// Back to the queue as if new: the next lease is a new attempt number (numbers never repeat)
    /// with a fresh budget of `max_attempts`. The checkpoint stays, so it resumes.
    pub fn queue_afresh(&mut self) {
        self.state = JobState::Queued;
        self.attempts_before_this_run = self.attempts;
    }
}

/// A submitted sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    pub id: SweepId,
    pub name: String,
    pub priority: i32,
    pub jobs: Vec<JobId>,
    pub cancelled: bool,
    /// Submission order, the tie-break of fair scheduling.
    pub sequence: u64,
}

/// An agent's capabilities (the domain side of `ndhtl.v1.AgentCapabilities`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCapabilities {
    pub backend: String,
    pub devices: Vec<DeviceKind>,
    pub slots: u32,
    pub version: String,
    pub hostname: String,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub capabilities: AgentCapabilities,
    pub last_heartbeat_ms: u64,
    /// Whether the coordinator gave up on it (no heartbeat for the agent timeout).
    pub lost: bool,
}

impl Agent {
    /// The kind of device its jobs run on: `cuda` on a CUDA agent, else `cpu`. Which GPU is the
    /// agent's business: it pins each slot to one GPU, and may run several slots per GPU.
    pub fn device_kind_of_jobs(&self) -> String {
        if self.capabilities.devices.contains(&DeviceKind::Cuda) {
            "cuda".into()
        } else {
            "cpu".into()
        }
    }

    pub fn can_run(&self, resources: &Resources) -> bool {
        let backend_ok = resources
            .backend
            .as_ref()
            .is_none_or(|backend| *backend == self.capabilities.backend);
        let device_ok = resources
            .device
            .is_none_or(|device| self.capabilities.devices.contains(&device));
        backend_ok && device_ok
    }
}
