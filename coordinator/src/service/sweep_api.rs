//! `ndhtl.v1.SweepService`: the calls of `ndhtl submit`, `status`, `cancel`, `report` and
//! `run`. A sweep's YAML is parsed and expanded here (pure functions of ndhtl-core), so a bad
//! sweep is refused with its file, line and column before any job exists.

use ndhtl_core::config::{FinetuneConfig, SourceConfig};
use ndhtl_core::report::{FinetuneOutcome, ReportError, progress, render};
use ndhtl_core::sweep::{DEFAULT_MAX_JOBS, parse_sweep};
use ndhtl_proto::v1;
use ndhtl_proto::v1::sweep_service_server::SweepService;
use tonic::{Request, Response, Status};

use super::convert::report_request_from_proto;
use super::event_loop::{CoordinatorHandle, ServiceError};
use crate::domain::{Job, JobKind, JobState, SweepId};
use crate::jobs::{jobs_of_plan, sweep_id};
use crate::state::{ClusterState, SharedName, find_sweep};
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
                description: describe_job(job),
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

/// What a job trains, in a few words for people ([`FinetuneConfig::describe`],
/// [`SourceConfig::describe`]); empty if its stored configuration does not parse.
fn describe_job(job: &Job) -> String {
    let described = match job.spec.kind {
        JobKind::Finetune => {
            serde_json::from_str::<FinetuneConfig>(&job.spec.config_json).map(|c| c.describe())
        }
        JobKind::Source => {
            serde_json::from_str::<SourceConfig>(&job.spec.config_json).map(|c| c.describe())
        }
    };
    described.unwrap_or_default()
}

/// A sweep's results, as `FetchResults` and `GetReport` answer them: the sweep `wanted` names
/// (an id, a name, or a prefix only one id has; a name several sweeps share is the latest) and
/// its jobs' results.
fn job_results(
    state: &ClusterState,
    store: &Store,
    wanted: &str,
) -> Result<(SweepId, Vec<v1::JobResult>), ServiceError> {
    let sweep = state.find_sweep(wanted, SharedName::Latest)?;
    let jobs = sweep
        .jobs
        .iter()
        .filter_map(|id| state.job(id))
        .map(|job| job_result(job, store))
        .collect::<Result<_, _>>()?;
    Ok((sweep.id.clone(), jobs))
}

/// What `FetchResults` answers for a sweep, read from a state folder's database without a
/// coordinator (`ndhtl report --state-dir`): after a coordinator or `ndhtl run` has stopped, or
/// beside a running one (a reader takes no lock, and reads the whole sweep at one moment, as the
/// event loop would answer it). The sweep is found as the coordinator finds it.
pub fn stored_job_results(
    store: &Store,
    wanted: &str,
) -> Result<(SweepId, Vec<v1::JobResult>), ServiceError> {
    store.read_at_one_moment(|store| sweep_results_in_store(store, wanted))
}

fn sweep_results_in_store(
    store: &Store,
    wanted: &str,
) -> Result<(SweepId, Vec<v1::JobResult>), ServiceError> {
    let snapshot = store.load()?;
    let sweep = find_sweep(&snapshot.sweeps, wanted, SharedName::Latest)?;
    let jobs: std::collections::HashMap<&str, &Job> = snapshot
        .jobs
        .iter()
        .map(|job| (job.spec.id.as_str(), job))
        .collect();
    let results = sweep
        .jobs
        .iter()
        .filter_map(|id| jobs.get(id.as_str()))
        .map(|job| job_result(job, store))
        .collect::<Result<_, _>>()?;
    Ok((sweep.id.clone(), results))
}

/// One job's result as `FetchResults` carries it: its state, the attempt that holds or held
/// it, its stored summary and its final metric history.
fn job_result(job: &Job, store: &Store) -> Result<v1::JobResult, ServiceError> {
    let history = final_history(store.metrics_of(&job.spec.id)?);
    let summary = store.summary_of(&job.spec.id)?;
    let attempt = match &job.state {
        JobState::Succeeded { attempt, .. } | JobState::Failed { attempt, .. } => *attempt,
        JobState::Leased(lease) => lease.attempt,
        JobState::Queued | JobState::Cancelled => job.attempts,
    };
    Ok(v1::JobResult {
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
    })
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
        // The same sweep submitted again (a retried call, a rerun) is the same sweep; its failed
        // jobs run again only when asked.
        if let Some((jobs, reused)) = existing {
            let retried = if request.retry_failed {
                self.handle.retry_failed(id.clone()).await?
            } else {
                0
            };
            tracing::info!(sweep = %id, retried, "sweep already submitted");
            return Ok(Response::new(v1::SubmitSweepResponse {
                sweep_id: id,
                jobs,
                reused,
                retried,
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
            retried: 0,
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
                        vec![state.find_sweep(&wanted, SharedName::Latest)?.id.clone()]
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
        let wanted = request.into_inner().sweep_id;
        // What cannot be undone needs one sweep: a name several sweeps share is refused.
        // Sweeps are never removed, so the one found is still there when the cancel runs.
        let sweep_id = self
            .handle
            .inspect(move |state, _| {
                state
                    .find_sweep(&wanted, SharedName::Refused)
                    .map(|sweep| sweep.id.clone())
                    .map_err(ServiceError::from)
            })
            .await??;
        let cancelled = self.handle.cancel(sweep_id.clone()).await?;
        Ok(Response::new(v1::CancelSweepResponse {
            cancelled,
            sweep_id,
        }))
    }

    async fn fetch_results(
        &self,
        request: Request<v1::FetchResultsRequest>,
    ) -> Result<Response<v1::FetchResultsResponse>, Status> {
        let wanted = request.into_inner().sweep_id;
        let (sweep_id, jobs) = self
            .handle
            .inspect(move |state, store| job_results(state, store, &wanted))
            .await??;
        Ok(Response::new(v1::FetchResultsResponse { jobs, sweep_id }))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::GetReportResponse>, Status> {
        let wire = request.into_inner();
        let report = report_request_from_proto(&wire)?;
        let wanted = wire.sweep_id;
        let (sweep_id, jobs) = self
            .handle
            .inspect(move |state, store| job_results(state, store, &wanted))
            .await??;
        // Reports are computed off the event loop: they read a copy of the results.
        let outcomes = outcomes_of_results(&jobs).map_err(ServiceError::from)?;
        let (finished, total) = progress(&outcomes);
        let text = render(&outcomes, &report).map_err(ServiceError::from)?;
        Ok(Response::new(v1::GetReportResponse {
            text,
            finished_jobs: finished as u32,
            total_jobs: total as u32,
            sweep_id,
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

    fn spec(id: &str) -> crate::domain::JobSpec {
        crate::domain::JobSpec {
            id: id.into(),
            kind: JobKind::Finetune,
            config_json: format!(r#"{{"job":"{id}"}}"#),
            depends_on: None,
            resources: crate::domain::Resources::ANY,
        }
    }

    /// A sweep of four jobs driven through the state machine into the store, as the event loop
    /// does: one succeeded (two lifetimes, a summary), one failed, one running, one queued.
    fn sweep_in_every_state(store: &mut Store) -> ClusterState {
        let mut state = ClusterState::new(crate::state::Timing::default());
        let (_, changes) = state
            .submit_sweep(
                "s".into(),
                "sweep".into(),
                1,
                ["a", "b", "c", "d"].map(spec).to_vec(),
            )
            .unwrap();
        store.apply(&changes).unwrap();
        let capabilities = crate::domain::AgentCapabilities {
            backend: "flex".into(),
            devices: vec![crate::domain::DeviceKind::Cpu],
            slots: 1,
            version: "0.1.0".into(),
            hostname: "h".into(),
        };
        let (agent, _, changes) = state
            .register_agent(capabilities, "0.1.0", None, &[], 0)
            .unwrap();
        store.apply(&changes).unwrap();
        let lease = |state: &mut ClusterState, store: &mut Store| {
            let (grant, changes) = state.lease(&agent, 0, 0).unwrap();
            store.apply(&changes).unwrap();
            grant.unwrap().spec.id
        };
        let first = lease(&mut state, store);
        for lifetime in 1..=2 {
            let (_, changes) = state
                .report_metrics(
                    &agent,
                    &first,
                    1,
                    lifetime,
                    format!(r#"{{"l":{lifetime}}}"#),
                    None,
                )
                .unwrap();
            store.apply(&changes).unwrap();
        }
        let changes = state
            .complete(&agent, &first, 1, r#"{"final_top1":50.0}"#.into(), None)
            .unwrap();
        store.apply(&changes).unwrap();
        let second = lease(&mut state, store);
        let (_, changes) = state
            .fail(&agent, &second, 1, "diverged".into(), false)
            .unwrap();
        store.apply(&changes).unwrap();
        let third = lease(&mut state, store);
        let (_, changes) = state
            .report_metrics(&agent, &third, 1, 1, r#"{"l":1}"#.into(), None)
            .unwrap();
        store.apply(&changes).unwrap();
        state
    }

    #[test]
    fn a_state_folder_read_without_a_coordinator_gives_the_served_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_exclusive(dir.path()).unwrap();
        let state = sweep_in_every_state(&mut store);
        let (sweep, served) = job_results(&state, &store, "s").unwrap();
        assert_eq!(sweep, "s");
        let states: Vec<&str> = served.iter().map(|job| job.state.as_str()).collect();
        assert_eq!(states, ["succeeded", "failed", "running", "queued"]);
        assert_eq!(served[0].metrics_json, [r#"{"l":1}"#, r#"{"l":2}"#]);
        assert_eq!(served[0].summary_json, r#"{"final_top1":50.0}"#);
        assert_eq!(served[2].metrics_json.len(), 1);

        // Read from the folder, beside the coordinator's store and after it is gone.
        let reader = Store::open_for_reading(dir.path()).unwrap();
        assert_eq!(
            stored_job_results(&reader, "s").unwrap(),
            ("s".to_string(), served.clone())
        );
        drop(store);
        assert_eq!(
            stored_job_results(&reader, "s").unwrap(),
            ("s".to_string(), served)
        );
        // By its name, both ways, as the coordinator finds it.
        assert_eq!(stored_job_results(&reader, "sweep").unwrap().0, "s");
        assert_eq!(job_results(&state, &reader, "sweep").unwrap().0, "s");

        for error in [
            job_results(&state, &reader, "t").unwrap_err(),
            stored_job_results(&reader, "t").unwrap_err(),
        ] {
            assert!(
                matches!(
                    error,
                    ServiceError::Coordinator(crate::error::CoordinatorError::UnknownSweep(ref id)) if id == "t"
                ),
                "{error}"
            );
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
