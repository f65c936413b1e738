//! The in-process cluster the cluster tests drive: a coordinator (event loop and gRPC server on
//! 127.0.0.1) that can be stopped and started again on the same address and state folder, and
//! agents running the real NDHTL trainer; with the small jobs and data they run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::Device;
use ndhtl_agent::data::synth::{SynthOptions, write_synthetic};
use ndhtl_agent::device::{BackendKind, ComputeDevice, DeviceSpec};
use ndhtl_agent::model::io::load_source_features;
use ndhtl_agent::runtime::runner::{JobRunner, NdhtlRunner, SOURCE_MODEL_FILE};
use ndhtl_agent::runtime::{AgentOptions, artifacts, run_agent};
use ndhtl_agent::train::{
    CancelToken, FinetuneConfig, LifetimeMetrics, Method, NoObserver, SourceConfig, TaskData,
    run_finetune,
};
use ndhtl_coordinator::datasets::fetcher::DatasetSource;
use ndhtl_coordinator::domain::{Job, JobSpec, JobState, Resources};
use ndhtl_coordinator::jobs::source_job;
use ndhtl_coordinator::service::{CoordinatorHandle, EmbeddedCoordinator, EmbeddedOptions};
use ndhtl_coordinator::state::Timing;
use tokio::sync::watch;

pub const TIMING: Timing = Timing {
    lease_timeout_ms: 60_000,
    heartbeat_interval_ms: 100,
    agent_timeout_ms: 120_000,
    max_attempts: 3,
};

/// The coordinator of the cluster tests: gRPC on `address` (port 0: a free one), its state in
/// `state_dir` (a fresh folder, or one an earlier start left).
pub async fn start_coordinator(
    state_dir: &Path,
    address: SocketAddr,
    datasets: Option<DatasetSource>,
) -> EmbeddedCoordinator {
    EmbeddedCoordinator::start(EmbeddedOptions {
        datasets,
        ..EmbeddedOptions::grpc_only(state_dir, address, TIMING)
    })
    .await
    .unwrap()
}

/// A coordinator and in-process agents running the real NDHTL trainer.
pub struct Cluster {
    /// Absent only while `restart_coordinator` has it down.
    coordinator: Option<EmbeddedCoordinator>,
    state_dir: PathBuf,
    address: SocketAddr,
    agents: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl Cluster {
    /// A coordinator that fetches no datasets (agents have theirs).
    pub async fn start(state_dir: &Path) -> Cluster {
        Self::start_serving(state_dir, None).await
    }

    /// A coordinator that fetches and serves CIFAR from `datasets`.
    pub async fn start_serving(state_dir: &Path, datasets: Option<DatasetSource>) -> Cluster {
        let coordinator =
            start_coordinator(state_dir, "127.0.0.1:0".parse().unwrap(), datasets).await;
        Cluster {
            address: coordinator.address(),
            coordinator: Some(coordinator),
            state_dir: state_dir.to_path_buf(),
            agents: Vec::new(),
        }
    }

    pub fn coordinator(&self) -> &EmbeddedCoordinator {
        self.coordinator
            .as_ref()
            .expect("the coordinator is running")
    }

    pub fn handle(&self) -> &CoordinatorHandle {
        self.coordinator().handle()
    }

    /// Stops the coordinator, runs `while_down` against its state folder, starts it again on
    /// the same address. Agents keep running throughout.
    pub async fn restart_coordinator(&mut self, while_down: impl FnOnce(&Path)) {
        let coordinator = self.coordinator.take().expect("running");
        coordinator.shutdown().await.unwrap();
        while_down(&self.state_dir);
        let coordinator = start_coordinator(&self.state_dir, self.address, None).await;
        self.coordinator = Some(coordinator);
    }

    pub fn add_agent(&mut self, data: &Path, work: &Path) {
        let runner = Arc::new(NdhtlRunner {
            data_dir: data.to_path_buf(),
            generated_data_dir: work.join("data"),
            backend: Some(BackendKind::Flex),
        });
        self.add_agent_with(data, work, runner);
    }

    pub fn add_agent_with(&mut self, data: &Path, work: &Path, runner: Arc<dyn JobRunner>) {
        let options = AgentOptions {
            coordinator: format!("http://{}", self.address),
            slot_devices: vec![DeviceSpec::Cpu],
            threads_per_slot: Some(1),
            backend: BackendKind::Flex,
            data_dir: data.to_path_buf(),
            work_dir: work.to_path_buf(),
            hostname: "test".into(),
            idle_poll: Duration::from_millis(50),
            duplicate_reports: false,
            dataset_poll: Duration::from_millis(50),
            dataset_wait: Duration::from_secs(5),
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move { run_agent(options, runner, stopped).await.unwrap() });
        self.agents.push((stop, task));
    }

    pub async fn stop_agent(&mut self, index: usize) {
        let (stop, task) = self.agents.remove(index);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    pub async fn stop_agents(mut self) {
        while !self.agents.is_empty() {
            self.stop_agent(0).await;
        }
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.shutdown().await.unwrap();
        }
    }

    pub async fn submit(
        &self,
        sweep: &str,
        jobs: Vec<JobSpec>,
    ) -> ndhtl_coordinator::state::Submitted {
        self.handle()
            .submit(sweep.into(), sweep.into(), 0, jobs)
            .await
            .unwrap()
    }

    pub async fn wait_done(&self, sweep: &str, limit: Duration) {
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

    pub async fn job(&self, id: &str) -> Job {
        let id = id.to_string();
        self.handle()
            .inspect(move |state, _| state.job(&id).unwrap().clone())
            .await
            .unwrap()
    }

    /// Waits until `job` has recorded at least `lifetimes` lifetimes.
    pub async fn wait_lifetimes(&self, job: &str, lifetimes: u32) {
        while self.job(job).await.completed_lifetimes < lifetimes {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hash of a succeeded source job's output (the source model).
    pub async fn source_output(&self, source: &str) -> String {
        match self.job(source).await.state {
            JobState::Succeeded {
                output: Some(hash), ..
            } => hash,
            other => panic!("the source job has not produced a model: {other:?}"),
        }
    }

    pub async fn stored_metrics(&self, job: &str) -> Vec<LifetimeMetrics> {
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
    pub async fn reference_run(
        &self,
        source: &str,
        config: &FinetuneConfig,
        data_dir: &Path,
        scratch: &Path,
    ) -> Vec<LifetimeMetrics> {
        let source_hash = self.source_output(source).await;
        let (mut file, _) = self
            .coordinator()
            .artifacts()
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

pub fn comparable(history: &[LifetimeMetrics]) -> Vec<(usize, f64, f64, f64, usize)> {
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

pub fn synth(dir: &Path) {
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

pub fn small_source(epochs: usize) -> JobSpec {
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

pub fn ndhtl_tune(lifetimes: usize) -> FinetuneConfig {
    FinetuneConfig {
        method: Method::Ndhtl,
        lifetimes,
        k: 3,
        lr: 1e-3,
        ..FinetuneConfig::default()
    }
}
