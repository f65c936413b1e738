//! `ndhtl.v1.SweepService`: the calls of `ndhtl submit`, `status`, `cancel`, `report` and
//! `run`. A sweep's YAML is parsed and expanded here (pure functions of ndhtl-core), so a bad
//! sweep is refused with its file, line and column before any job exists.

use ndhtl_core::report::{FinetuneOutcome, ReportError, progress, render};
use ndhtl_core::sweep::{DEFAULT_MAX_JOBS, parse_sweep};
use ndhtl_proto::v1;
use ndhtl_proto::v1::sweep_service_server::SweepService;
use tonic::{Request, Response, Status};

use super::convert::report_request_from_proto;
use super::event_loop::{CoordinatorHandle, ServiceError};
use crate::domain::{JobKind, JobState};
use crate::jobs::{jobs_of_plan, sweep_id};
use crate::state::ClusterState;
use crate::store::{Store, StoreError, StoredMetrics};

pub struct SweepApi {
    pub handle: CoordinatorHandle,
    /// Sweeps implying more jobs than this are refused (a sweep's own `max_jobs` overrides it).
    pub max_jobs: u64,
}

impl SweepApi {
    pub fn new(handle: CoordinatorHandle) -> Self {
        SweepApi {
            handle,
            max_jobs: DEFAULT_MAX_JOBS,
        }
    }
}

/// Of a job's stored records, the one per lifetime that counts: the latest attempt's. A resumed
/// attempt continues where the checkpoint ended, so attempts never overlap on a lifetime unless
/// a stale one was refused; the latest is the one the final result builds on.
pub fn final_history(records: Vec<StoredMetrics>) -> Vec<StoredMetrics> {
    let mut history: Vec<StoredMetrics> = Vec::with_capacity(records.len());
    for record in records {
        match history.last_mut() {
            Some(last) if last.lifetime == record.lifetime => {
                if record.attempt > last.attempt {
                    *last = record;
                }
            }
            _ => history.push(record),
        }
    }
    history
}

fn sweep_status(state: &ClusterState, sweep_id: &str) -> Result<v1::SweepStatus, ServiceError> {
    let sweep = state
        .sweep(sweep_id)
        .ok_or_else(|| crate::error::CoordinatorError::UnknownSweep(sweep_id.into()))?;
    let counts = state.sweep_counts(sweep_id)?;
    let failures = sweep
        .jobs
        .iter()
        .filter_map(|id| state.job(id))
        .filter_map(|job| match &job.state {
            JobState::Failed { attempt, reason } => Some(v1::JobFailure {
                job: Some(v1::JobAttempt {
                    job_id: job.spec.id.clone(),
                    attempt: *attempt,
                }),
                error: reason.clone(),
            }),
            _ => None,
        })
        .collect();
    Ok(v1::SweepStatus {
        sweep_id: sweep.id.clone(),
        name: sweep.name.clone(),
        priority: sweep.priority,
        queued: counts.queued,
        running: counts.running,
        succeeded: counts.succeeded,
        failed: counts.failed,
        cancelled: counts.cancelled,
        failures,
    })
}

fn job_results(
    state: &ClusterState,
    store: &Store,
    sweep_id: &str,
) -> Result<Vec<v1::JobResult>, ServiceError> {
    let sweep = state
        .sweep(sweep_id)
        .ok_or_else(|| crate::error::CoordinatorError::UnknownSweep(sweep_id.into()))?;
    let mut results = Vec::with_capacity(sweep.jobs.len());
    for job in sweep.jobs.iter().filter_map(|id| state.job(id)) {
        let history = final_history(store.metrics_of(&job.spec.id)?);
        let summary = store.summary_of(&job.spec.id)?;
        let attempt = match &job.state {
            JobState::Succeeded { attempt, .. } | JobState::Failed { attempt, .. } => *attempt,
            JobState::Leased(lease) => lease.attempt,
            JobState::Queued | JobState::Cancelled => job.attempts,
        };
        results.push(v1::JobResult {
            job_id: job.spec.id.clone(),
            kind: match job.spec.kind {
                JobKind::Source => "source",
                JobKind::Finetune => "finetune",
            }
            .into(),
            config_json: job.spec.config_json.clone(),
            state: job.state.name().into(),
            attempt,
            metrics_json: history.into_iter().map(|r| r.metrics_json).collect(),
            summary_json: summary.map(|(_, json)| json).unwrap_or_default(),
        });
    }
    Ok(results)
}

#[tonic::async_trait]
impl SweepService for SweepApi {
    async fn submit_sweep(
        &self,
        request: Request<v1::SubmitSweepRequest>,
    ) -> Result<Response<v1::SubmitSweepResponse>, Status> {
        let request = request.into_inner();
        let file_name = if request.file_name.is_empty() {
            "sweep.yaml".to_string()
        } else {
            request.file_name
        };
        let definition = parse_sweep(&request.yaml, &file_name)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let plan = definition
            .expand(self.max_jobs)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        for warning in &plan.warnings {
            tracing::warn!(sweep = %plan.name, %warning, "sweep warning");
        }
        let jobs = jobs_of_plan(&plan);
        let id = sweep_id(&plan.name, &jobs);
        let priority = if request.priority != 0 {
            request.priority
        } else {
            plan.priority
        };
        let existing = {
            let id = id.clone();
            self.handle
                .inspect(move |state, _| {
                    state.sweep(&id).map(|sweep| {
                        let reused = sweep
                            .jobs
                            .iter()
                            .filter_map(|job| state.job(job))
                            .filter(|job| matches!(job.state, JobState::Succeeded { .. }))
                            .count() as u32;
                        (sweep.jobs.len() as u32, reused)
                    })
                })
                .await?
        };
        // The same sweep submitted again (a retried call, a rerun) is the same sweep.
        if let Some((jobs, reused)) = existing {
            tracing::info!(sweep = %id, "sweep already submitted");
            return Ok(Response::new(v1::SubmitSweepResponse {
                sweep_id: id,
                jobs,
                reused,
            }));
        }
        let submitted = self
            .handle
            .submit(id.clone(), plan.name.clone(), priority, jobs)
            .await?;
        tracing::info!(sweep = %id, jobs = submitted.jobs, reused = submitted.reused, "sweep submitted");
        Ok(Response::new(v1::SubmitSweepResponse {
            sweep_id: id,
            jobs: submitted.jobs,
            reused: submitted.reused,
        }))
    }

    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        let wanted = request.into_inner().sweep_id;
        let response = self
            .handle
            .inspect_at(
                move |state, _, now| -> Result<v1::GetStatusResponse, ServiceError> {
                    let ids: Vec<String> = if wanted.is_empty() {
                        let mut sweeps: Vec<_> = state.sweeps().collect();
                        sweeps.sort_by_key(|sweep| sweep.sequence);
                        sweeps.into_iter().map(|sweep| sweep.id.clone()).collect()
                    } else {
                        vec![wanted]
                    };
                    let sweeps = ids
                        .iter()
                        .map(|id| sweep_status(state, id))
                        .collect::<Result<Vec<_>, _>>()?;
                    let agents = state
                        .agents()
                        .filter(|agent| !agent.lost)
                        .map(|agent| v1::AgentStatus {
                            agent_id: agent.id.clone(),
                            capabilities: Some(super::convert::capabilities_to_proto(
                                &agent.capabilities,
                            )),
                            running: state.leases_of(&agent.id).len() as u32,
                            last_seen_ms_ago: now.saturating_sub(agent.last_heartbeat_ms),
                        })
                        .collect();
                    Ok(v1::GetStatusResponse {
                        sweeps,
                        agents,
                        datasets: Vec::new(),
                    })
                },
            )
            .await??;
        let datasets = self.handle.datasets().await?;
        Ok(Response::new(v1::GetStatusResponse {
            datasets: super::convert::dataset_views_to_proto(datasets),
            ..response
        }))
    }

    async fn cancel_sweep(
        &self,
        request: Request<v1::CancelSweepRequest>,
    ) -> Result<Response<v1::CancelSweepResponse>, Status> {
        let cancelled = self.handle.cancel(request.into_inner().sweep_id).await?;
        Ok(Response::new(v1::CancelSweepResponse { cancelled }))
    }

    async fn fetch_results(
        &self,
        request: Request<v1::FetchResultsRequest>,
    ) -> Result<Response<v1::FetchResultsResponse>, Status> {
        let sweep_id = request.into_inner().sweep_id;
        let jobs = self
            .handle
            .inspect(move |state, store| job_results(state, store, &sweep_id))
            .await??;
        Ok(Response::new(v1::FetchResultsResponse { jobs }))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::GetReportResponse>, Status> {
        let wire = request.into_inner();
        let report = report_request_from_proto(&wire)?;
        let sweep_id = wire.sweep_id;
        let jobs = self
            .handle
            .inspect(move |state, store| job_results(state, store, &sweep_id))
            .await??;
        // Reports are computed off the event loop: they read a copy of the results.
        let outcomes = outcomes_of_results(&jobs).map_err(ServiceError::from)?;
        let (finished, total) = progress(&outcomes);
        let text = render(&outcomes, &report).map_err(ServiceError::from)?;
        Ok(Response::new(v1::GetReportResponse {
            text,
            finished_jobs: finished as u32,
            total_jobs: total as u32,
        }))
    }
}

/// The fine-tune outcomes of a sweep's results.
pub fn outcomes_of_results(jobs: &[v1::JobResult]) -> Result<Vec<FinetuneOutcome>, ReportError> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(outcome) = FinetuneOutcome::from_records(
            &job.job_id,
            &job.kind,
            &job.config_json,
            &job.state,
            &job.summary_json,
            &job.metrics_json,
        )? {
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Status {
        Status::from(ServiceError::Store(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(attempt: u32, lifetime: u32) -> StoredMetrics {
        StoredMetrics {
            attempt,
            lifetime,
            metrics_json: format!("{attempt}/{lifetime}"),
        }
    }

    #[test]
    fn the_latest_attempt_wins_each_lifetime() {
        // Sorted by (lifetime, attempt), as the store returns them.
        let history = final_history(vec![record(1, 1), record(1, 2), record(2, 2), record(2, 3)]);
        let kept: Vec<&str> = history.iter().map(|r| r.metrics_json.as_str()).collect();
        assert_eq!(kept, vec!["1/1", "2/2", "2/3"]);
    }
}
