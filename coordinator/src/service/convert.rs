//! Every conversion between `ndhtl.v1` wire types and the coordinator's domain, and every
//! mapping of an error to a gRPC status, in one place.

use ndhtl_proto::v1;
use tonic::Status;

use super::event_loop::ServiceError;
use crate::domain::{AgentCapabilities, DeviceKind, JobId, JobKind};
use crate::error::CoordinatorError;
use crate::state::LeaseGrant;
use crate::store::ArtifactError;

pub fn capabilities_from_proto(
    wire: Option<v1::AgentCapabilities>,
) -> Result<AgentCapabilities, Status> {
    let wire =
        wire.ok_or_else(|| Status::invalid_argument("register: `capabilities` is required"))?;
    let mut devices = Vec::new();
    for device in &wire.devices {
        let kind = match device.kind.as_str() {
            "cpu" => DeviceKind::Cpu,
            "cuda" => DeviceKind::Cuda,
            other => {
                return Err(Status::invalid_argument(format!(
                    "register: unknown device kind `{other}` (use cpu or cuda)"
                )));
            }
        };
        if !devices.contains(&kind) {
            devices.push(kind);
        }
    }
    if devices.is_empty() {
        devices.push(DeviceKind::Cpu);
    }
    Ok(AgentCapabilities {
        backend: wire.backend,
        devices,
        slots: wire.slots,
        version: wire.version,
        hostname: wire.hostname,
    })
}

/// The domain side of an agent's capabilities, for status tables.
pub fn capabilities_to_proto(capabilities: &AgentCapabilities) -> v1::AgentCapabilities {
    v1::AgentCapabilities {
        backend: capabilities.backend.clone(),
        devices: capabilities
            .devices
            .iter()
            .map(|kind| v1::Device {
                kind: match kind {
                    DeviceKind::Cpu => "cpu",
                    DeviceKind::Cuda => "cuda",
                }
                .into(),
                ..Default::default()
            })
            .collect(),
        slots: capabilities.slots,
        version: capabilities.version.clone(),
        hostname: capabilities.hostname.clone(),
        ..Default::default()
    }
}

pub fn attempts_from_proto(wire: Vec<v1::JobAttempt>) -> Vec<(JobId, u32)> {
    wire.into_iter().map(|a| (a.job_id, a.attempt)).collect()
}

pub fn attempts_to_proto(attempts: Vec<(JobId, u32)>) -> Vec<v1::JobAttempt> {
    attempts
        .into_iter()
        .map(|(job_id, attempt)| v1::JobAttempt { job_id, attempt })
        .collect()
}

pub fn attempt_from_proto(wire: Option<v1::JobAttempt>) -> Result<(JobId, u32), Status> {
    let wire =
        wire.ok_or_else(|| Status::invalid_argument("`job` (job id and attempt) is required"))?;
    if wire.attempt == 0 {
        return Err(Status::invalid_argument("attempts are numbered from 1"));
    }
    Ok((wire.job_id, wire.attempt))
}

pub fn optional_hash(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

pub fn lease_to_proto(grant: LeaseGrant) -> v1::JobLease {
    v1::JobLease {
        job: Some(v1::JobAttempt {
            job_id: grant.spec.id,
            attempt: grant.attempt,
        }),
        kind: match grant.spec.kind {
            JobKind::Source => "source",
            JobKind::Finetune => "finetune",
        }
        .into(),
        config_json: grant.spec.config_json,
        source_artifact: grant.source_artifact.unwrap_or_default(),
        resume_checkpoint: grant.resume.map(|(_, hash)| hash).unwrap_or_default(),
        completed_lifetimes: grant.completed_lifetimes,
        deadline_unix_ms: grant.deadline_ms,
        device: grant.device,
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let message = error.to_string();
        match error {
            ServiceError::Coordinator(error) => match error {
                CoordinatorError::UnknownAgent(_)
                | CoordinatorError::UnknownJob(_)
                | CoordinatorError::UnknownSweep(_) => Status::not_found(message),
                CoordinatorError::StaleAttempt { .. }
                | CoordinatorError::SlotBusy { .. }
                | CoordinatorError::VersionMismatch { .. } => Status::failed_precondition(message),
                CoordinatorError::NoSuchSlot { .. } | CoordinatorError::InvalidArgument { .. } => {
                    Status::invalid_argument(message)
                }
                CoordinatorError::DuplicateSweep(_) => Status::already_exists(message),
            },
            // The coordinator stops on a failed write; a restarted one carries on. Retry later.
            ServiceError::Store(_) | ServiceError::ShuttingDown => Status::unavailable(message),
        }
    }
}

impl From<ArtifactError> for Status {
    fn from(error: ArtifactError) -> Status {
        let message = error.to_string();
        match error {
            ArtifactError::InvalidHash(_) | ArtifactError::HashMismatch { .. } => {
                Status::invalid_argument(message)
            }
            ArtifactError::NotFound(_) => Status::not_found(message),
            ArtifactError::Io { .. } => Status::internal(message),
        }
    }
}
