//! The agent: registers with the coordinator, keeps a lease per slot, runs each job on its own
//! thread, streams a metric record and uploads a checkpoint per lifetime, and survives the
//! coordinator going away (it retries, and re-registers with its running jobs when forgotten).

pub mod artifacts;
pub mod datasets;
pub mod runner;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndhtl_proto::v1;
use ndhtl_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::device::{BackendKind, DeviceSpec};
use crate::train::CancelToken;
use runner::{JobInput, JobRunner, LifetimeEvent, has_files};
use tracing::Instrument;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `http://host:port` of the coordinator.
    pub coordinator: String,
    /// The device of each slot: one job runs per slot (`--slots` on the CPU, `--slots` per
    /// GPU). Build it with [`crate::device::slot_devices`].
    pub slot_devices: Vec<DeviceSpec>,
    /// CPU threads each job may use (flex's rayon pool, libtorch's intra-op threads), so that
    /// several slots on one machine do not oversubscribe its cores. `None`: the library default.
    pub threads_per_slot: Option<usize>,
    pub backend: BackendKind,
    /// The agent's own data folder (`--data`). A job on CIFAR whose dataset is not there gets
    /// it from the coordinator, extracted under `work_dir/datasets/`.
    pub data_dir: PathBuf,
    /// Job folders, the artifact cache and the datasets the coordinator served.
    pub work_dir: PathBuf,
    pub hostname: String,
    /// Wait between lease requests when there is no work.
    pub idle_poll: Duration,
    /// Fault injection (chaos tests): send every metrics report twice.
    pub duplicate_reports: bool,
    /// How often to ask the coordinator about a dataset it is still fetching.
    pub dataset_poll: Duration,
    /// How long a job waits for a dataset the coordinator cannot serve right now.
    pub dataset_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the coordinator refused this agent: {0}")]
    Refused(Status),
    #[error("invalid coordinator address `{0}`")]
    BadAddress(String),
}

type Attempt = (String, u32);

/// What the agent's tasks share.
struct Shared {
    options: AgentOptions,
    runner: Arc<dyn JobRunner>,
    client: AgentServiceClient<Channel>,
    agent_id: Mutex<String>,
    running: Mutex<BTreeMap<Attempt, CancelToken>>,
    /// One dataset download at a time, whichever slot needs it first.
    dataset_lock: tokio::sync::Mutex<()>,
}

impl Shared {
    fn agent_id(&self) -> String {
        self.agent_id.lock().expect("agent id lock").clone()
    }

    fn running(&self) -> Vec<v1::JobAttempt> {
        self.running
            .lock()
            .expect("running lock")
            .keys()
            .map(|(job_id, attempt)| v1::JobAttempt {
                job_id: job_id.clone(),
                attempt: *attempt,
            })
            .collect()
    }
}

impl AgentOptions {
    pub fn slots(&self) -> u32 {
        self.slot_devices.len() as u32
    }
}

fn capabilities(options: &AgentOptions) -> v1::AgentCapabilities {
    let mut distinct = options.slot_devices.clone();
    distinct.dedup();
    let devices = distinct
        .into_iter()
        .map(|device| match device {
            DeviceSpec::Cpu => v1::Device {
                kind: "cpu".into(),
                index: 0,
                name: "cpu".into(),
                memory_bytes: 0,
            },
            DeviceSpec::Cuda(index) => v1::Device {
                kind: "cuda".into(),
                index: index.unwrap_or(0) as u32,
                name: String::new(),
                memory_bytes: 0,
            },
        })
        .collect();
    let build = crate::device::build_info();
    v1::AgentCapabilities {
        backend: options.backend.as_str().into(),
        devices,
        slots: options.slots(),
        version: env!("CARGO_PKG_VERSION").into(),
        hostname: options.hostname.clone(),
        libtorch_version: build.libtorch_version.unwrap_or_default(),
        cuda_version: build.cuda_version.unwrap_or_default(),
    }
}

/// Retries `call` while the coordinator is unreachable, with capped exponential backoff.
async fn with_retry<T, F, Fut>(
    what: &str,
    shutdown: &watch::Receiver<bool>,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match call().await {
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                ) && !*shutdown.borrow() =>
            {
                tracing::warn!(call = what, error = %status.message(), retry_in_ms = delay.as_millis() as u64, "coordinator unreachable");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

async fn register(
    shared: &Shared,
    previous: Option<String>,
    shutdown: &watch::Receiver<bool>,
) -> Result<v1::RegisterResponse, AgentError> {
    let request = v1::RegisterRequest {
        capabilities: Some(capabilities(&shared.options)),
        previous_agent_id: previous.unwrap_or_default(),
        running: shared.running(),
    };
    let response = with_retry("register", shutdown, || {
        let request = request.clone();
        let mut client = shared.client.clone();
        async move { client.register(request).await.map(|r| r.into_inner()) }
    })
    .await
    .map_err(AgentError::Refused)?;
    // On re-registration, the jobs the coordinator did not keep must stop.
    let kept: Vec<Attempt> = response
        .kept
        .iter()
        .map(|a| (a.job_id.clone(), a.attempt))
        .collect();
    for (attempt, token) in shared.running.lock().expect("running lock").iter() {
        if !kept.contains(attempt) {
            token.cancel();
        }
    }
    *shared.agent_id.lock().expect("agent id lock") = response.agent_id.clone();
    tracing::info!(agent = %response.agent_id, coordinator = %shared.options.coordinator, slots = shared.options.slots(), "registered");
    Ok(response)
}

/// Runs the agent until `shutdown` turns true: running jobs are stopped at their next step (the
/// last checkpoint stays, and the coordinator re-leases them).
pub async fn run_agent(
    options: AgentOptions,
    runner: Arc<dyn JobRunner>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let (_never, no_drain) = watch::channel(false);
    run_agent_draining(options, runner, no_drain, shutdown).await
}

/// [`run_agent`], and a graceful stop: once `drain` turns true the agent leases nothing new,
/// lets its running jobs finish (heartbeats keep their leases alive) and returns when they have;
/// `shutdown` still stops everything at once.
pub async fn run_agent_draining(
    options: AgentOptions,
    runner: Arc<dyn JobRunner>,
    drain: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let channel = Channel::from_shared(options.coordinator.clone())
        .map_err(|_| AgentError::BadAddress(options.coordinator.clone()))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let shared = Arc::new(Shared {
        client: AgentServiceClient::new(channel)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20),
        runner,
        agent_id: Mutex::new(String::new()),
        running: Mutex::new(BTreeMap::new()),
        dataset_lock: tokio::sync::Mutex::new(()),
        options,
    });
    let registered = register(&shared, None, &shutdown).await?;
    let heartbeat_every = Duration::from_millis(registered.heartbeat_interval_ms.max(10));

    // Everything below stops on `stop`: the caller's shutdown, or the end of a drain.
    let (stop_sender, stop) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat_loop(
        Arc::clone(&shared),
        heartbeat_every,
        stop.clone(),
    ));
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..shared.options.slots() {
        slots.spawn(slot_loop(
            Arc::clone(&shared),
            slot,
            stop.clone(),
            drain.clone(),
        ));
    }
    let mut external = shutdown.clone();
    tokio::select! {
        _ = external.wait_for(|stopped| *stopped) => {}
        _ = async { while slots.join_next().await.is_some() {} } => {
            tracing::info!("drained: every running job finished");
        }
    }
    let _ = stop_sender.send(true);
    for token in shared.running.lock().expect("running lock").values() {
        token.cancel();
    }
    while slots.join_next().await.is_some() {}
    let _ = heartbeat.await;
    Ok(())
}

async fn heartbeat_loop(shared: Arc<Shared>, every: Duration, shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        tokio::time::sleep(every).await;
        let request = v1::HeartbeatRequest {
            agent_id: shared.agent_id(),
            running: shared.running(),
            free_slots: shared
                .options
                .slots()
                .saturating_sub(shared.running().len() as u32),
        };
        let mut client = shared.client.clone();
        match client.heartbeat(request).await {
            Ok(response) => {
                let running = shared.running.lock().expect("running lock");
                for attempt in response.into_inner().cancel {
                    if let Some(token) = running.get(&(attempt.job_id.clone(), attempt.attempt)) {
                        tracing::warn!(job = %attempt.job_id, attempt = attempt.attempt, "coordinator cancelled this attempt");
                        token.cancel();
                    }
                }
            }
            Err(status) if status.code() == Code::NotFound => {
                // The coordinator forgot us (it lost us, or its state was reset): register again,
                // keeping what it still leases to us.
                let previous = Some(shared.agent_id());
                if let Err(error) = register(&shared, previous, &shutdown).await {
                    tracing::error!(%error, "re-registration failed");
                }
            }
            Err(status) => tracing::warn!(error = %status.message(), "heartbeat failed"),
        }
    }
}

async fn slot_loop(
    shared: Arc<Shared>,
    slot: u32,
    shutdown: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() && !*drain.borrow() {
        let request = v1::LeaseJobRequest {
            agent_id: shared.agent_id(),
            slot,
        };
        let lease = with_retry("lease", &shutdown, || {
            let mut client = shared.client.clone();
            let request = request.clone();
            async move {
                client
                    .lease_job(request)
                    .await
                    .map(|r| r.into_inner().lease)
            }
        })
        .await;
        match lease {
            Ok(Some(lease)) => run_leased(&shared, slot, lease, &shutdown).await,
            Ok(None) => tokio::time::sleep(shared.options.idle_poll).await,
            Err(status) => {
                tracing::warn!(slot, error = %status.message(), "lease refused");
                tokio::time::sleep(shared.options.idle_poll).await;
            }
        }
    }
}

/// Everything a finished attempt reports.
enum Finish {
    Done(runner::JobOutput),
    Failed(runner::RunnerError),
}

async fn run_leased(
    shared: &Arc<Shared>,
    slot: u32,
    lease: v1::JobLease,
    shutdown: &watch::Receiver<bool>,
) {
    let Some(job) = lease.job.as_ref() else {
        return;
    };
    // `instrument`, not `enter`: a span entered across an await leaks into other tasks' logs.
    let span = tracing::info_span!("job", job = %&job.job_id[..job.job_id.len().min(12)], attempt = job.attempt, slot);
    run_leased_in_span(shared, slot, lease, shutdown)
        .instrument(span)
        .await
}

async fn run_leased_in_span(
    shared: &Arc<Shared>,
    slot: u32,
    lease: v1::JobLease,
    shutdown: &watch::Receiver<bool>,
) {
    let Some(job) = lease.job.clone() else { return };
    let attempt_key = (job.job_id.clone(), job.attempt);
    // The agent knows which GPU each of its slots owns; the coordinator only counts slots.
    let device = shared
        .options
        .slot_devices
        .get(slot as usize)
        .map(|device| device.to_string())
        .unwrap_or_else(|| lease.device.clone());
    tracing::info!(kind = %lease.kind, %device, "leased");
    let work = &shared.options.work_dir;
    let run_dir = work.join("jobs").join(&job.job_id);
    let cache = work.join("artifacts");
    let mut client = shared.client.clone();

    let prepared: Result<(Option<PathBuf>, Option<PathBuf>), runner::RunnerError> = async {
        let data_root = match datasets::required_dataset(&lease.kind, &lease.config_json)? {
            Some(dataset) => datasets::data_root_for(shared, dataset, shutdown).await?,
            None => None,
        };
        // The coordinator's checkpoint is authoritative: lifetimes after it were never recorded.
        let checkpoint = crate::train::checkpoint::checkpoint_dir(&run_dir);
        if run_dir.exists() {
            std::fs::remove_dir_all(&run_dir).map_err(|e| retryable(e.to_string()))?;
        }
        if !lease.resume_checkpoint.is_empty() {
            let bytes = artifacts::fetch(&mut client, &cache, &lease.resume_checkpoint)
                .await
                .map_err(|e| retryable(e.to_string()))?;
            artifacts::unpack_into(&bytes, &checkpoint).map_err(|e| retryable(e.to_string()))?;
            tracing::info!(
                lifetimes = lease.completed_lifetimes,
                "resuming from the uploaded checkpoint"
            );
        }
        if lease.source_artifact.is_empty() {
            return Ok((None, data_root));
        }
        let source_dir = work.join("sources").join(&lease.source_artifact);
        if !has_files(&source_dir) {
            let bytes = artifacts::fetch(&mut client, &cache, &lease.source_artifact)
                .await
                .map_err(|e| retryable(e.to_string()))?;
            artifacts::unpack_into(&bytes, &source_dir).map_err(|e| retryable(e.to_string()))?;
        }
        Ok((Some(source_dir), data_root))
    }
    .await;
    let (source_model, data_root) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            report_failure(shared, &job, &error, shutdown).await;
            return;
        }
    };

    let token = CancelToken::new();
    shared
        .running
        .lock()
        .expect("running lock")
        .insert(attempt_key.clone(), token.clone());
    let input = JobInput {
        kind: lease.kind.clone(),
        config_json: lease.config_json.clone(),
        device,
        run_dir,
        source_model,
        source_id: lease.source_artifact.clone(),
        data_root,
    };
    let (events, mut event_receiver) = tokio::sync::mpsc::unbounded_channel::<LifetimeEvent>();
    let runner = Arc::clone(&shared.runner);
    let run_token = token.clone();
    let threads = shared.options.threads_per_slot;
    let worker = tokio::task::spawn_blocking(move || {
        let mut forward = |event: LifetimeEvent| {
            let _ = events.send(event);
        };
        crate::device::with_cpu_threads(threads, || runner.run(&input, &mut forward, &run_token))
    });
    while let Some(event) = event_receiver.recv().await {
        if let Err(status) = report_lifetime(shared, &job, event, shutdown).await {
            tracing::warn!(error = %status.message(), "report refused; stopping this attempt");
            token.cancel();
        }
    }
    let result = match worker.await {
        Ok(Ok(output)) => Finish::Done(output),
        Ok(Err(error)) => Finish::Failed(error),
        Err(panic) => Finish::Failed(runner::RunnerError {
            message: format!("the job panicked: {panic}"),
            retryable: false,
        }),
    };
    shared
        .running
        .lock()
        .expect("running lock")
        .remove(&attempt_key);
    if token.is_cancelled() {
        tracing::info!("attempt stopped; its last checkpoint stays with the coordinator");
        return;
    }
    match result {
        Finish::Done(output) => report_success(shared, &job, output, shutdown).await,
        Finish::Failed(error) => report_failure(shared, &job, &error, shutdown).await,
    }
}

/// Packs a folder and uploads it (retrying while the coordinator is unreachable); returns its hash.
async fn upload_dir(
    shared: &Shared,
    dir: &std::path::Path,
    shutdown: &watch::Receiver<bool>,
) -> Result<String, Status> {
    let (hash, bytes) = artifacts::pack_dir(dir).map_err(|e| Status::internal(e.to_string()))?;
    with_retry("upload", shutdown, || {
        let mut client = shared.client.clone();
        let (hash, bytes) = (hash.clone(), bytes.clone());
        async move {
            artifacts::upload(&mut client, &hash, bytes)
                .await
                .map_err(|e| match e {
                    artifacts::ArtifactError::Rpc { status, .. } => status,
                    other => Status::internal(other.to_string()),
                })
        }
    })
    .await?;
    Ok(hash)
}

fn retryable(message: String) -> runner::RunnerError {
    runner::RunnerError {
        message,
        retryable: true,
    }
}

async fn report_lifetime(
    shared: &Shared,
    job: &v1::JobAttempt,
    event: LifetimeEvent,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), Status> {
    let client = shared.client.clone();
    let checkpoint_artifact = match event.checkpoint_dir.filter(|d| has_files(d)) {
        Some(dir) => upload_dir(shared, &dir, shutdown).await?,
        None => String::new(),
    };
    let report = v1::MetricsReport {
        agent_id: shared.agent_id(),
        job: Some(job.clone()),
        lifetime: event.metrics.lifetime as u32,
        metrics_json: serde_json::to_string(&event.metrics).expect("metrics serialise"),
        checkpoint_artifact,
    };
    // Fault injection for the chaos tests: every report is sent twice, as a retry after a
    // lost response would; the coordinator must store it once.
    let sends = if shared.options.duplicate_reports {
        2
    } else {
        1
    };
    for _ in 0..sends {
        with_retry("report", shutdown, || {
            let report = report.clone();
            let mut client = client.clone();
            async move {
                client
                    .report_metrics(tokio_stream::iter(vec![report]))
                    .await
                    .map(|_| ())
            }
        })
        .await?;
    }
    Ok(())
}

async fn report_success(
    shared: &Shared,
    job: &v1::JobAttempt,
    output: runner::JobOutput,
    shutdown: &watch::Receiver<bool>,
) {
    let client = shared.client.clone();
    let output_artifact = match &output.output_dir {
        Some(dir) => match upload_dir(shared, dir, shutdown).await {
            Ok(hash) => hash,
            Err(status) => {
                let error = retryable(format!("uploading the output: {}", status.message()));
                report_failure(shared, job, &error, shutdown).await;
                return;
            }
        },
        None => String::new(),
    };
    let request = v1::CompleteJobRequest {
        agent_id: shared.agent_id(),
        job: Some(job.clone()),
        summary_json: serde_json::to_string(&output.summary).expect("summaries serialise"),
        output_artifact,
    };
    let result = with_retry("complete", shutdown, || {
        let request = request.clone();
        let mut client = client.clone();
        async move { client.complete_job(request).await }
    })
    .await;
    match result {
        Ok(_) => tracing::info!(final_top1 = output.summary.final_top1, "job completed"),
        Err(status) => {
            tracing::warn!(error = %status.message(), "completion refused (a newer attempt holds the lease)")
        }
    }
}

async fn report_failure(
    shared: &Shared,
    job: &v1::JobAttempt,
    error: &runner::RunnerError,
    shutdown: &watch::Receiver<bool>,
) {
    tracing::error!(error = %error.message, retryable = error.retryable, "job failed");
    let request = v1::FailJobRequest {
        agent_id: shared.agent_id(),
        job: Some(job.clone()),
        error: error.message.clone(),
        retryable: error.retryable,
    };
    let client = shared.client.clone();
    let _ = with_retry("fail", shutdown, || {
        let request = request.clone();
        let mut client = client.clone();
        async move { client.fail_job(request).await }
    })
    .await;
}
