//! A coordinator and agents in one process over real gRPC on 127.0.0.1, running real NDHTL jobs
//! on generated data: a source job and the fine-tunes that depend on it. The stored results must
//! equal a direct run from the same source model, also when an agent is lost mid-job and the job
//! resumes elsewhere from its uploaded checkpoint, and when the coordinator restarts mid-job.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::Device;
use ndhtl_agent::data::synth::{SynthOptions, write_synthetic};
use ndhtl_agent::device::{BackendKind, ComputeDevice, DeviceSpec};
use ndhtl_agent::model::io::load_source_features;
use ndhtl_agent::runtime::runner::{
    JobInput, JobOutput, JobRunner, LifetimeEvent, NdhtlRunner, RunnerError, SOURCE_MODEL_FILE,
};
use ndhtl_agent::runtime::{AgentOptions, artifacts, run_agent};
use ndhtl_agent::train::{
    CancelToken, FinetuneConfig, LifetimeMetrics, Method, NoObserver, SourceConfig, TaskData,
    run_finetune,
};
use ndhtl_coordinator::domain::{Job, JobSpec, JobState, Resources};
use ndhtl_coordinator::jobs::{finetune_job, source_job};
use ndhtl_coordinator::service::server::serve;
use ndhtl_coordinator::service::{CoordinatorHandle, SystemClock, spawn_event_loop};
use ndhtl_coordinator::state::Timing;
use ndhtl_coordinator::store::{ArtifactStore, Store};
use tokio::sync::watch;

const TIMING: Timing = Timing {
    lease_timeout_ms: 60_000,
    heartbeat_interval_ms: 100,
    agent_timeout_ms: 120_000,
    max_attempts: 3,
};

/// A coordinator (event loop and gRPC server) that can be stopped and started again on the same
/// address and state folder.
struct Coordinator {
    handle: CoordinatorHandle,
    artifacts: ArtifactStore,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    event_loop: std::thread::JoinHandle<()>,
}

impl Coordinator {
    async fn start(state_dir: &Path, address: SocketAddr) -> (Coordinator, SocketAddr) {
        let store = Store::open(state_dir).unwrap();
        let artifacts = ArtifactStore::open(&state_dir.join("artifacts")).unwrap();
        let (handle, event_loop) = spawn_event_loop(store, TIMING, SystemClock).unwrap();
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let bound = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (server_handle, server_artifacts) = (handle.clone(), artifacts.clone());
        let server = tokio::spawn(async move {
            serve(listener, server_handle, server_artifacts, async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
        });
        let coordinator = Coordinator {
            handle,
            artifacts,
            stop,
            server,
            event_loop,
        };
        (coordinator, bound)
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap();
        self.handle.stop();
        tokio::task::spawn_blocking(move || self.event_loop.join().unwrap())
            .await
            .unwrap();
    }
}

/// A coordinator and in-process agents running the real NDHTL trainer.
struct Cluster {
    /// Absent only while `restart_coordinator` has it down.
    coordinator: Option<Coordinator>,
    state_dir: PathBuf,
    address: SocketAddr,
    agents: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl Cluster {
    async fn start(state_dir: &Path) -> Cluster {
        let (coordinator, address) =
            Coordinator::start(state_dir, "127.0.0.1:0".parse().unwrap()).await;
        Cluster {
            coordinator: Some(coordinator),
            state_dir: state_dir.to_path_buf(),
            address,
            agents: Vec::new(),
        }
    }

    fn coordinator(&self) -> &Coordinator {
        self.coordinator
            .as_ref()
            .expect("the coordinator is running")
    }

    fn handle(&self) -> &CoordinatorHandle {
        &self.coordinator().handle
    }

    /// Stops the coordinator, runs `while_down` against its state folder, starts it again on
    /// the same address. Agents keep running throughout.
    async fn restart_coordinator(&mut self, while_down: impl FnOnce(&Path)) {
        self.coordinator.take().expect("running").shutdown().await;
        while_down(&self.state_dir);
        let (coordinator, _) = Coordinator::start(&self.state_dir, self.address).await;
        self.coordinator = Some(coordinator);
    }

    fn add_agent(&mut self, data: &Path, work: &Path) {
        let runner = Arc::new(NdhtlRunner {
            data_dir: data.to_path_buf(),
            generated_data_dir: work.join("data"),
            backend: Some(BackendKind::Flex),
        });
        self.add_agent_with(work, runner);
    }

    fn add_agent_with(&mut self, work: &Path, runner: Arc<dyn JobRunner>) {
        let options = AgentOptions {
            coordinator: format!("http://{}", self.address),
            slot_devices: vec![DeviceSpec::Cpu],
            threads_per_slot: Some(1),
            backend: BackendKind::Flex,
            work_dir: work.to_path_buf(),
            hostname: "test".into(),
            idle_poll: Duration::from_millis(50),
            duplicate_reports: false,
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move { run_agent(options, runner, stopped).await.unwrap() });
        self.agents.push((stop, task));
    }

    async fn stop_agent(&mut self, index: usize) {
        let (stop, task) = self.agents.remove(index);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    async fn stop_agents(mut self) {
        while !self.agents.is_empty() {
            self.stop_agent(0).await;
        }
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.shutdown().await;
        }
    }

    async fn submit(&self, sweep: &str, jobs: Vec<JobSpec>) -> ndhtl_coordinator::state::Submitted {
        self.handle()
            .submit(sweep.into(), sweep.into(), 0, jobs)
            .await
            .unwrap()
    }

    async fn wait_done(&self, sweep: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let counts = self.handle().counts(sweep.into()).await.unwrap();
            if counts.is_done() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sweep not done in time: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn job(&self, id: &str) -> Job {
        let id = id.to_string();
        self.handle()
            .inspect(move |state, _| state.job(&id).unwrap().clone())
            .await
            .unwrap()
    }

    /// Waits until `job` has recorded at least `lifetimes` lifetimes.
    async fn wait_lifetimes(&self, job: &str, lifetimes: u32) {
        while self.job(job).await.completed_lifetimes < lifetimes {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hash of a succeeded source job's output (the source model).
    async fn source_output(&self, source: &str) -> String {
        match self.job(source).await.state {
            JobState::Succeeded {
                output: Some(hash), ..
            } => hash,
            other => panic!("the source job has not produced a model: {other:?}"),
        }
    }

    async fn stored_metrics(&self, job: &str) -> Vec<LifetimeMetrics> {
        let job = job.to_string();
        let rows = self
            .handle()
            .inspect(move |_, store| store.metrics_of(&job).unwrap())
            .await
            .unwrap();
        rows.iter()
            .map(|r| serde_json::from_str(&r.metrics_json).unwrap())
            .collect()
    }

    /// The fine-tune run directly, from the source model the cluster produced.
    async fn reference_run(
        &self,
        source: &str,
        config: &FinetuneConfig,
        data_dir: &Path,
        scratch: &Path,
    ) -> Vec<LifetimeMetrics> {
        let source_hash = self.source_output(source).await;
        let (mut file, _) = self
            .coordinator()
            .artifacts
            .open_artifact(&source_hash)
            .unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        let source_dir = scratch.join("reference-source");
        artifacts::unpack_into(&bytes, &source_dir).unwrap();
        let features = load_source_features(
            &source_dir.join(SOURCE_MODEL_FILE),
            config.seed,
            &Device::flex(),
        )
        .unwrap();
        let data = TaskData::load(data_dir, &config.task.parse().unwrap(), None).unwrap();
        let device = ComputeDevice::resolve(DeviceSpec::Cpu, Some(BackendKind::Flex)).unwrap();
        run_finetune(
            config,
            features,
            &source_hash,
            &data,
            &device,
            None,
            &mut NoObserver,
            &CancelToken::new(),
        )
        .unwrap()
        .history
    }
}

fn comparable(history: &[LifetimeMetrics]) -> Vec<(usize, f64, f64, f64, usize)> {
    history
        .iter()
        .map(|m| {
            (
                m.lifetime,
                m.val_loss,
                m.val_top1,
                m.train_loss,
                m.backward_passes,
            )
        })
        .collect()
}

fn synth(dir: &Path) {
    write_synthetic(
        dir,
        &SynthOptions {
            seed: 2,
            cifar10_train_per_class: 12,
            cifar10_test_per_class: 4,
            cifar100_train_per_class: 8,
            cifar100_test_per_class: 3,
        },
    )
    .unwrap();
}

fn small_source(epochs: usize) -> JobSpec {
    source_job(
        &SourceConfig {
            epochs,
            batch_size: 16,
            lr: 0.02,
            ..SourceConfig::default()
        },
        Resources::ANY,
    )
}

fn ndhtl_tune(lifetimes: usize) -> FinetuneConfig {
    FinetuneConfig {
        method: Method::Ndhtl,
        lifetimes,
        k: 3,
        lr: 1e-3,
        ..FinetuneConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_and_two_fine_tunes_run_across_two_agents() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    let source = small_source(2);
    let stl = FinetuneConfig {
        method: Method::Stl,
        lifetimes: 2,
        lr: 1e-3,
        ..FinetuneConfig::default()
    };
    let ndhtl = FinetuneConfig {
        method: Method::Ndhtl,
        ..stl.clone()
    };
    let jobs = vec![
        finetune_job(&stl, &source, Resources::ANY),
        finetune_job(&ndhtl, &source, Resources::ANY),
        source.clone(),
    ];
    assert_eq!(cluster.submit("s", jobs.clone()).await.jobs, 3);
    cluster.add_agent(&data, &dir.path().join("agent-0"));
    cluster.add_agent(&data, &dir.path().join("agent-1"));
    cluster.wait_done("s", Duration::from_secs(240)).await;
    let counts = cluster.handle().counts("s".into()).await.unwrap();
    assert_eq!(counts.succeeded, 3, "{counts:?}");

    cluster.source_output(&source.id).await;
    assert_eq!(
        cluster.stored_metrics(&source.id).await.len(),
        2,
        "one record per source epoch"
    );
    for (job, config) in [(&jobs[0], &stl), (&jobs[1], &ndhtl)] {
        let stored = cluster.stored_metrics(&job.id).await;
        let reference = cluster
            .reference_run(&source.id, config, &data, dir.path())
            .await;
        assert_eq!(
            comparable(&stored),
            comparable(&reference),
            "{:?}: the cluster's results equal a direct run",
            config.method
        );
    }
    // The same sweep submitted again reuses every result.
    let again = cluster.submit("s2", jobs).await;
    assert_eq!((again.jobs, again.reused), (3, 3));
    cluster.stop_agents().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_lost_with_its_agent_resumes_elsewhere_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    let source = small_source(1);
    cluster.submit("src", vec![source.clone()]).await;
    cluster.add_agent(&data, &dir.path().join("agent-0"));
    cluster.wait_done("src", Duration::from_secs(120)).await;

    let config = ndhtl_tune(4);
    let tune = finetune_job(&config, &source, Resources::ANY);
    cluster.submit("s", vec![tune.clone()]).await;
    // Wait for two lifetimes, then lose the agent that runs the job.
    cluster.wait_lifetimes(&tune.id, 2).await;
    cluster.stop_agent(0).await;
    cluster.handle().lose_agent("agent-0".into()).await.unwrap();
    cluster.add_agent(&data, &dir.path().join("agent-1"));
    cluster.wait_done("s", Duration::from_secs(240)).await;

    let state = cluster.job(&tune.id).await.state;
    assert!(
        matches!(state, JobState::Succeeded { attempt: 2, .. }),
        "{state:?}"
    );
    let stored = cluster.stored_metrics(&tune.id).await;
    assert_eq!(stored.len(), 4, "every lifetime exactly once");
    let reference = cluster
        .reference_run(&source.id, &config, &data, dir.path())
        .await;
    assert_eq!(
        comparable(&stored),
        comparable(&reference),
        "a resumed job ends where an uninterrupted one does"
    );
    cluster.stop_agents().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_rides_out_a_coordinator_restart_and_its_job_finishes_on_the_same_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    let source = small_source(1);
    let config = ndhtl_tune(8);
    let tune = finetune_job(&config, &source, Resources::ANY);
    cluster
        .submit("s", vec![source.clone(), tune.clone()])
        .await;
    cluster.add_agent(&data, &dir.path().join("agent"));

    // Let the fine-tune record a lifetime, then take the coordinator down mid-job.
    cluster.wait_lifetimes(&tune.id, 1).await;
    let tune_id = tune.id.clone();
    cluster
        .restart_coordinator(|state_dir| {
            // What the coordinator persisted: the job was still running when it went down.
            let snapshot = Store::open(state_dir).unwrap().load().unwrap();
            let job = snapshot.jobs.iter().find(|j| j.spec.id == tune_id).unwrap();
            assert!(
                matches!(job.state, JobState::Leased(_)) && job.completed_lifetimes < 8,
                "the outage must fall in the middle of the job: {job:?}"
            );
            // The agent keeps training and retrying meanwhile.
            std::thread::sleep(Duration::from_millis(800));
        })
        .await;
    cluster.wait_done("s", Duration::from_secs(240)).await;

    let finished = cluster.job(&tune.id).await.state;
    assert!(
        matches!(finished, JobState::Succeeded { attempt: 1, .. }),
        "kept its lease through the restart: {finished:?}"
    );
    let stored = cluster.stored_metrics(&tune.id).await;
    assert_eq!(stored.len(), 8, "every lifetime exactly once");
    let reference = cluster
        .reference_run(&source.id, &config, &data, dir.path())
        .await;
    assert_eq!(comparable(&stored), comparable(&reference));
    cluster.stop_agents().await;
}

/// A runner whose fine-tunes of seed 666 die the way libtorch does when CUDA runs out of memory
/// (tch panics on a C++ exception); every other job runs normally.
struct OutOfMemoryOnSeed666(NdhtlRunner);

impl JobRunner for OutOfMemoryOnSeed666 {
    fn run(
        &self,
        input: &JobInput,
        on_lifetime: &mut dyn FnMut(LifetimeEvent),
        cancel: &CancelToken,
    ) -> Result<JobOutput, RunnerError> {
        if input.config_json.contains("\"seed\":666") {
            panic!(
                "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)\")"
            );
        }
        self.0.run(input, on_lifetime, cancel)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_runs_out_of_gpu_memory_fails_with_its_error_and_the_agent_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    let source = small_source(1);
    let doomed = FinetuneConfig {
        seed: 666,
        ..ndhtl_tune(1)
    };
    let fine = ndhtl_tune(1);
    // Priority order within the sweep is submission order: the doomed job leases first.
    let jobs = vec![
        source.clone(),
        finetune_job(&doomed, &source, Resources::ANY),
        finetune_job(&fine, &source, Resources::ANY),
    ];
    cluster.submit("oom", jobs.clone()).await;
    let work = dir.path().join("agent-0");
    let runner = Arc::new(OutOfMemoryOnSeed666(NdhtlRunner {
        data_dir: data.clone(),
        generated_data_dir: work.join("data"),
        backend: Some(BackendKind::Flex),
    }));
    cluster.add_agent_with(&work, runner);
    cluster.wait_done("oom", Duration::from_secs(240)).await;

    match cluster.job(&jobs[1].id).await.state {
        JobState::Failed { attempt, reason } => {
            assert_eq!(attempt, 1, "a panic is not retried");
            assert!(
                reason.contains("CUDA out of memory"),
                "the error is kept: {reason}"
            );
        }
        other => panic!("the doomed job should have failed, not {other:?}"),
    }
    assert!(
        matches!(
            cluster.job(&jobs[2].id).await.state,
            JobState::Succeeded { .. }
        ),
        "the same agent ran the next job: its slot was freed"
    );
    let agents = cluster
        .handle()
        .inspect(|state, _| state.agents().filter(|a| !a.lost).count())
        .await
        .unwrap();
    assert_eq!(agents, 1, "the agent stayed up and registered");
    cluster.stop_agents().await;
}
