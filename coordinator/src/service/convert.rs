//! Every conversion between `ndhtl.v1` wire types and the coordinator's domain, and every
//! mapping of an error to a gRPC status, in one place.

use ndhtl_core::report::{
    GridSpec, LifetimeView, Metric, ReportError, ReportFormat, ReportKind, ReportRequest,
};
use ndhtl_proto::v1;
use tonic::Status;

use ndhtl_core::dataset::DatasetKind;

use super::dataset_loop::{DatasetReply, DatasetView};
use super::event_loop::ServiceError;
use crate::datasets::DatasetAnswer;
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
                | CoordinatorError::VersionMismatch { .. }
                | CoordinatorError::SweepCancelled(_)
                | CoordinatorError::DatasetNotServed { .. } => Status::failed_precondition(message),
                CoordinatorError::NoSuchSlot { .. }
                | CoordinatorError::InvalidArgument { .. }
                | CoordinatorError::AmbiguousSweep { .. } => Status::invalid_argument(message),
                CoordinatorError::DatasetUnavailable { .. } => Status::unavailable(message),
                CoordinatorError::DuplicateSweep(_) => Status::already_exists(message),
            },
            // The coordinator stops on a failed write; a restarted one carries on. Retry later.
            ServiceError::Store(_) | ServiceError::ShuttingDown => Status::unavailable(message),
            ServiceError::Report(error) => match error {
                ReportError::UnknownParameter { .. }
                | ReportError::SameParameter(_)
                | ReportError::AxisPooled { .. }
                | ReportError::BadFilter { .. } => Status::invalid_argument(message),
                // A stored record that does not parse: the state is damaged; retrying won't help.
                ReportError::Record { .. } => Status::data_loss(message),
            },
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

/// A report request from the wire; enum values this version does not know are refused.
pub fn report_request_from_proto(wire: &v1::GetReportRequest) -> Result<ReportRequest, Status> {
    let unknown = |field: &str, value: i32| {
        Status::invalid_argument(format!("unknown {field} {value} in the report request"))
    };
    let format = match v1::ReportFormat::try_from(wire.format) {
        Ok(v1::ReportFormat::Unspecified | v1::ReportFormat::Markdown) => ReportFormat::Markdown,
        Ok(v1::ReportFormat::Csv) => ReportFormat::Csv,
        Ok(v1::ReportFormat::Json) => ReportFormat::Json,
        Ok(v1::ReportFormat::Latex) => ReportFormat::Latex,
        Err(_) => return Err(unknown("format", wire.format)),
    };
    let view = match v1::LifetimeView::try_from(wire.view) {
        Ok(v1::LifetimeView::Unspecified | v1::LifetimeView::Final) => LifetimeView::Final,
        Ok(v1::LifetimeView::Best) => LifetimeView::Best,
        Err(_) => return Err(unknown("lifetime view", wire.view)),
    };
    let metric = match v1::ReportMetric::try_from(wire.metric) {
        Ok(v1::ReportMetric::Unspecified | v1::ReportMetric::Top1) => Metric::Top1,
        Ok(v1::ReportMetric::Top5) => Metric::Top5,
        Ok(v1::ReportMetric::Loss) => Metric::Loss,
        Err(_) => return Err(unknown("metric", wire.metric)),
    };
    let kind = match v1::ReportKind::try_from(wire.kind) {
        Ok(v1::ReportKind::Unspecified | v1::ReportKind::Table3) => ReportKind::Table3,
        Ok(v1::ReportKind::Best) => ReportKind::Best,
        Ok(v1::ReportKind::Grid) => {
            if wire.rows.is_empty() || wire.cols.is_empty() {
                return Err(Status::invalid_argument(
                    "a grid report needs the parameters of its rows and columns",
                ));
            }
            let mut spec = GridSpec::new(&wire.rows, &wire.cols);
            if !wire.pool.is_empty() {
                spec.pool = wire.pool.clone();
            }
            spec.filters = wire
                .filters
                .iter()
                .map(|filter| (filter.name.clone(), filter.value.clone()))
                .collect();
            ReportKind::Grid(spec)
        }
        Err(_) => return Err(unknown("report kind", wire.kind)),
    };
    Ok(ReportRequest {
        kind,
        metric,
        view,
        format,
    })
}

pub fn report_request_to_proto(sweep_id: &str, request: &ReportRequest) -> v1::GetReportRequest {
    let mut wire = v1::GetReportRequest {
        sweep_id: sweep_id.to_string(),
        format: match request.format {
            ReportFormat::Markdown => v1::ReportFormat::Markdown,
            ReportFormat::Csv => v1::ReportFormat::Csv,
            ReportFormat::Json => v1::ReportFormat::Json,
            ReportFormat::Latex => v1::ReportFormat::Latex,
        } as i32,
        view: match request.view {
            LifetimeView::Final => v1::LifetimeView::Final,
            LifetimeView::Best => v1::LifetimeView::Best,
        } as i32,
        metric: match request.metric {
            Metric::Top1 => v1::ReportMetric::Top1,
            Metric::Top5 => v1::ReportMetric::Top5,
            Metric::Loss => v1::ReportMetric::Loss,
        } as i32,
        ..Default::default()
    };
    wire.kind = match &request.kind {
        ReportKind::Table3 => v1::ReportKind::Table3,
        ReportKind::Best => v1::ReportKind::Best,
        ReportKind::Grid(spec) => {
            wire.rows = spec.rows.clone();
            wire.cols = spec.cols.clone();
            wire.pool = spec.pool.clone();
            wire.filters = spec
                .filters
                .iter()
                .map(|(name, value)| v1::ParameterFilter {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect();
            v1::ReportKind::Grid
        }
    } as i32;
    wire
}

pub fn dataset_from_proto(name: &str) -> Result<DatasetKind, Status> {
    name.parse()
        .map_err(|error: ndhtl_core::dataset::UnknownDataset| {
            Status::invalid_argument(format!("`dataset`: {error}"))
        })
}

pub fn dataset_reply_to_proto(reply: DatasetReply) -> v1::GetDatasetResponse {
    match reply.answer {
        DatasetAnswer::Ready(stored) => v1::GetDatasetResponse {
            ready: true,
            archive_sha256: stored.artifact,
            file_name: stored.file_name,
            archive_bytes: stored.bytes,
            archive_md5: stored.md5,
            fetched_bytes: stored.bytes,
        },
        DatasetAnswer::Preparing { .. } => v1::GetDatasetResponse {
            ready: false,
            archive_bytes: reply.total_bytes,
            fetched_bytes: reply.fetched_bytes,
            ..v1::GetDatasetResponse::default()
        },
    }
}

pub fn dataset_views_to_proto(views: Vec<DatasetView>) -> Vec<v1::DatasetStatus> {
    views
        .into_iter()
        .map(|view| v1::DatasetStatus {
            dataset: view.dataset.as_str().to_string(),
            state: view.state.to_string(),
            detail: view.detail,
            bytes: view.bytes,
        })
        .collect()
}
