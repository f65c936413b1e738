//! `ndhtl.v1.AgentService`: the calls agents make, translated into event-loop commands.

use std::pin::Pin;

use ndhtl_proto::v1;
use ndhtl_proto::v1::agent_service_server::AgentService;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{
    attempt_from_proto, attempts_from_proto, attempts_to_proto, capabilities_from_proto,
    dataset_from_proto, dataset_reply_to_proto, lease_to_proto, optional_hash,
};
use super::event_loop::CoordinatorHandle;
use crate::store::ArtifactStore;

/// Bytes per streamed artifact chunk.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The largest artifact accepted (checkpoints of the CIFAR AlexNet are about 30 MB).
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

pub struct AgentApi {
    pub handle: CoordinatorHandle,
    pub artifacts: ArtifactStore,
}

fn nonempty(field: &'static str, value: String) -> Result<String, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("`{field}` is required")))
    } else {
        Ok(value)
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let request = request.into_inner();
        let capabilities = capabilities_from_proto(request.capabilities)?;
        let previous = optional_hash(request.previous_agent_id);
        let (agent_id, kept) = self
            .handle
            .register(capabilities, previous, attempts_from_proto(request.running))
            .await?;
        let timing = self.handle.inspect(|state, _| state.timing()).await?;
        tracing::info!(agent = %agent_id, kept = kept.len(), "agent registered");
        Ok(Response::new(v1::RegisterResponse {
            agent_id,
            heartbeat_interval_ms: timing.heartbeat_interval_ms,
            lease_timeout_ms: timing.lease_timeout_ms,
            kept: attempts_to_proto(kept),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let agent = nonempty("agent_id", request.agent_id)?;
        let cancel = self
            .handle
            .heartbeat(agent, attempts_from_proto(request.running))
            .await?;
        Ok(Response::new(v1::HeartbeatResponse {
            cancel: attempts_to_proto(cancel),
        }))
    }

    async fn get_dataset(
        &self,
        request: Request<v1::GetDatasetRequest>,
    ) -> Result<Response<v1::GetDatasetResponse>, Status> {
        let request = request.into_inner();
        let agent = nonempty("agent_id", request.agent_id)?;
        let dataset = dataset_from_proto(&request.dataset)?;
        let reply = self.handle.dataset(agent, dataset).await?;
        Ok(Response::new(dataset_reply_to_proto(reply)))
    }

    async fn lease_job(
        &self,
        request: Request<v1::LeaseJobRequest>,
    ) -> Result<Response<v1::LeaseJobResponse>, Status> {
        let request = request.into_inner();
        let agent = nonempty("agent_id", request.agent_id)?;
        let grant = self.handle.lease(agent, request.slot).await?;
        Ok(Response::new(v1::LeaseJobResponse {
            lease: grant.map(lease_to_proto),
        }))
    }

    async fn report_metrics(
        &self,
        request: Request<Streaming<v1::MetricsReport>>,
    ) -> Result<Response<v1::ReportMetricsResponse>, Status> {
        let mut reports = request.into_inner();
        let (mut stored, mut duplicates) = (0, 0);
        while let Some(report) = reports.next().await {
            let report = report?;
            let agent = nonempty("agent_id", report.agent_id)?;
            let (job, attempt) = attempt_from_proto(report.job)?;
            serde_json::from_str::<serde_json::Value>(&report.metrics_json).map_err(|e| {
                Status::invalid_argument(format!("`metrics_json` is not JSON: {e}"))
            })?;
            let checkpoint = optional_hash(report.checkpoint_artifact);
            if let Some(hash) = &checkpoint
                && !self.artifacts.contains(hash)
            {
                return Err(Status::failed_precondition(format!(
                    "checkpoint {hash} was not uploaded"
                )));
            }
            let new = self
                .handle
                .report_metrics(
                    agent,
                    job,
                    attempt,
                    report.lifetime,
                    report.metrics_json,
                    checkpoint,
                )
                .await?;
            if new { stored += 1 } else { duplicates += 1 }
        }
        Ok(Response::new(v1::ReportMetricsResponse {
            stored,
            duplicates,
        }))
    }

    async fn complete_job(
        &self,
        request: Request<v1::CompleteJobRequest>,
    ) -> Result<Response<v1::CompleteJobResponse>, Status> {
        let request = request.into_inner();
        let agent = nonempty("agent_id", request.agent_id)?;
        let (job, attempt) = attempt_from_proto(request.job)?;
        let output = optional_hash(request.output_artifact);
        if let Some(hash) = &output
            && !self.artifacts.contains(hash)
        {
            return Err(Status::failed_precondition(format!(
                "output artifact {hash} was not uploaded"
            )));
        }
        self.handle
            .complete(agent, job, attempt, request.summary_json, output)
            .await?;
        Ok(Response::new(v1::CompleteJobResponse {}))
    }

    async fn fail_job(
        &self,
        request: Request<v1::FailJobRequest>,
    ) -> Result<Response<v1::FailJobResponse>, Status> {
        let request = request.into_inner();
        let agent = nonempty("agent_id", request.agent_id)?;
        let (job, attempt) = attempt_from_proto(request.job)?;
        let will_retry = self
            .handle
            .fail(agent, job, attempt, request.error, request.retryable)
            .await?;
        Ok(Response::new(v1::FailJobResponse { will_retry }))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<v1::ArtifactChunk>>,
    ) -> Result<Response<v1::UploadArtifactResponse>, Status> {
        let mut chunks = request.into_inner();
        let mut bytes = Vec::new();
        let mut identity: Option<(String, u64)> = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            let (hash, total) = identity
                .get_or_insert_with(|| (chunk.sha256.clone(), chunk.total_bytes))
                .clone();
            if chunk.sha256 != hash || chunk.total_bytes != total {
                return Err(Status::invalid_argument(
                    "every chunk of an upload must name the same sha256 and total_bytes",
                ));
            }
            if total > MAX_ARTIFACT_BYTES {
                return Err(Status::invalid_argument(format!(
                    "artifact of {total} bytes exceeds the {MAX_ARTIFACT_BYTES}-byte limit"
                )));
            }
            if chunk.offset != bytes.len() as u64 {
                return Err(Status::invalid_argument(format!(
                    "chunk at offset {} but {} bytes received so far",
                    chunk.offset,
                    bytes.len()
                )));
            }
            bytes.extend_from_slice(&chunk.data);
            if bytes.len() as u64 > total {
                return Err(Status::invalid_argument("more bytes than `total_bytes`"));
            }
        }
        let (hash, total) = identity
            .ok_or_else(|| Status::invalid_argument("an upload needs at least one chunk"))?;
        if bytes.len() as u64 != total {
            return Err(Status::invalid_argument(format!(
                "upload ended after {} of {total} bytes",
                bytes.len()
            )));
        }
        let artifacts = self.artifacts.clone();
        let (_, already_present) =
            tokio::task::spawn_blocking(move || artifacts.put(&hash, &mut &bytes[..]))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(v1::UploadArtifactResponse {
            already_present,
        }))
    }

    type DownloadArtifactStream =
        Pin<Box<dyn Stream<Item = Result<v1::ArtifactChunk, Status>> + Send>>;

    async fn download_artifact(
        &self,
        request: Request<v1::DownloadArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        let hash = request.into_inner().sha256;
        let (mut file, total) = self.artifacts.open_artifact(&hash)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut offset = 0u64;
            loop {
                let mut data = vec![0u8; CHUNK_BYTES];
                let read = match file.read(&mut data) {
                    Ok(read) => read,
                    Err(error) => {
                        let _ = sender.blocking_send(Err(Status::internal(error.to_string())));
                        return;
                    }
                };
                if read == 0 {
                    return;
                }
                data.truncate(read);
                let chunk = v1::ArtifactChunk {
                    sha256: hash.clone(),
                    total_bytes: total,
                    offset,
                    data,
                };
                offset += read as u64;
                if sender.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
