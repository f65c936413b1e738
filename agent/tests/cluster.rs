//! A coordinator and agents in one process over real gRPC on 127.0.0.1, running real NDHTL jobs
//! on generated data: a source job and the fine-tunes that depend on it. The stored results must
//! equal a direct run from the same source model, also when an agent is lost mid-job and the job
//! resumes elsewhere from its uploaded checkpoint.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::Device;
use ndhtl_agent::data::synth::{SynthOptions, write_synthetic};
use ndhtl_agent::device::{BackendKind, ComputeDevice, DeviceSpec};
use ndhtl_agent::model::io::load_source_features;
use ndhtl_agent::runtime::runner::{NdhtlRunner, SOURCE_MODEL_FILE};
use ndhtl_agent::runtime::{AgentOptions, artifacts, run_agent};
use ndhtl_agent::train::{
    CancelToken, FinetuneConfig, LifetimeMetrics, Method, NoObserver, SourceConfig, TaskData,
    run_finetune,
};
use ndhtl_coordinator::domain::{JobState, Resources};
use ndhtl_coordinator::jobs::{finetune_job, source_job};
use ndhtl_coordinator::service::server::serve;
use ndhtl_coordinator::service::{CoordinatorHandle, SystemClock, spawn_event_loop};
use ndhtl_coordinator::state::Timing;
use ndhtl_coordinator::store::{ArtifactStore, Store};
use tokio::sync::watch;

struct Cluster {
    handle: CoordinatorHandle,
    address: String,
    artifacts: ArtifactStore,
    agents: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

async fn start_coordinator(state_dir: &Path, timing: Timing) -> Cluster {
    let store = Store::open(state_dir).unwrap();
    let artifacts = ArtifactStore::open(&state_dir.join("artifacts")).unwrap();
    let (handle, _thread) = spawn_event_loop(store, timing, SystemClock).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (server_handle, server_artifacts) = (handle.clone(), artifacts.clone());
    tokio::spawn(async move {
        serve(
            listener,
            server_handle,
            server_artifacts,
            std::future::pending(),
        )
        .await
        .unwrap()
    });
    Cluster {
        handle,
        address,
        artifacts,
        agents: Vec::new(),
    }
}

impl Cluster {
    fn add_agent(&mut self, data: &Path, work: &Path) {
        let options = AgentOptions {
            coordinator: self.address.clone(),
            slots: 1,
            device: DeviceSpec::Cpu,
            backend: BackendKind::Flex,
            work_dir: work.to_path_buf(),
            hostname: "test".into(),
            idle_poll: Duration::from_millis(50),
        };
        let runner = Arc::new(NdhtlRunner {
            data_dir: data.to_path_buf(),
            backend: Some(BackendKind::Flex),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move { run_agent(options, runner, stopped).await.unwrap() });
        self.agents.push((stop, task));
    }

    async fn wait_done(&self, sweep: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let counts = self.handle.counts(sweep.into()).await.unwrap();
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

    async fn stored_metrics(&self, job: &str) -> Vec<LifetimeMetrics> {
        let job = job.to_string();
        let rows = self
            .handle
            .inspect(move |_, store| store.metrics_of(&job).unwrap())
            .await
            .unwrap();
        rows.iter()
            .map(|r| serde_json::from_str(&r.metrics_json).unwrap())
            .collect()
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

/// The fine-tune run directly, from the source model the cluster produced.
fn reference_run(
    cluster_source: &[u8],
    source_hash: &str,
    config: &FinetuneConfig,
    data_dir: &Path,
    scratch: &Path,
) -> Vec<LifetimeMetrics> {
    let source_dir = scratch.join("reference-source");
    artifacts::unpack_into(cluster_source, &source_dir).unwrap();
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
        source_hash,
        &data,
        &device,
        None,
        &mut NoObserver,
        &CancelToken::new(),
    )
    .unwrap()
    .history
}

fn read_artifact(store: &ArtifactStore, hash: &str) -> Vec<u8> {
    let (mut file, _) = store.open_artifact(hash).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_and_two_fine_tunes_run_across_two_agents() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = start_coordinator(
        &dir.path().join("state"),
        Timing {
            heartbeat_interval_ms: 100,
            ..Timing::default()
        },
    )
    .await;
    let source = source_job(
        &SourceConfig {
            epochs: 2,
            batch_size: 16,
            lr: 0.02,
            ..SourceConfig::default()
        },
        Resources::ANY,
    );
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
    let submitted = cluster
        .handle
        .submit("s".into(), "smoke".into(), 0, jobs.clone())
        .await
        .unwrap();
    assert_eq!(submitted.jobs, 3);
    cluster.add_agent(&data, &dir.path().join("agent-0"));
    cluster.add_agent(&data, &dir.path().join("agent-1"));
    cluster.wait_done("s", Duration::from_secs(240)).await;
    let counts = cluster.handle.counts("s".into()).await.unwrap();
    assert_eq!(counts.succeeded, 3, "{counts:?}");

    let source_state = cluster
        .handle
        .inspect({
            let id = source.id.clone();
            move |state, _| state.job(&id).unwrap().state.clone()
        })
        .await
        .unwrap();
    let JobState::Succeeded {
        output: Some(source_hash),
        ..
    } = source_state
    else {
        panic!("{source_state:?}")
    };
    assert_eq!(
        cluster.stored_metrics(&source.id).await.len(),
        2,
        "one record per source epoch"
    );
    let source_bytes = read_artifact(&cluster.artifacts, &source_hash);
    for (job, config) in [(&jobs[0], &stl), (&jobs[1], &ndhtl)] {
        let stored = cluster.stored_metrics(&job.id).await;
        let reference = reference_run(&source_bytes, &source_hash, config, &data, dir.path());
        assert_eq!(
            comparable(&stored),
            comparable(&reference),
            "{:?}: the cluster's results equal a direct run",
            config.method
        );
    }
    // The same sweep submitted again reuses every result.
    let again = cluster
        .handle
        .submit("s2".into(), "smoke again".into(), 0, jobs)
        .await
        .unwrap();
    assert_eq!((again.jobs, again.reused), (3, 3));
    for (stop, task) in cluster.agents {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_lost_with_its_agent_resumes_elsewhere_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = start_coordinator(
        &dir.path().join("state"),
        Timing {
            heartbeat_interval_ms: 100,
            ..Timing::default()
        },
    )
    .await;
    let source = source_job(
        &SourceConfig {
            epochs: 1,
            batch_size: 16,
            lr: 0.02,
            ..SourceConfig::default()
        },
        Resources::ANY,
    );
    cluster
        .handle
        .submit("src".into(), "source".into(), 0, vec![source.clone()])
        .await
        .unwrap();
    cluster.add_agent(&data, &dir.path().join("agent-0"));
    cluster.wait_done("src", Duration::from_secs(120)).await;

    let config = FinetuneConfig {
        method: Method::Ndhtl,
        lifetimes: 4,
        k: 3,
        lr: 1e-3,
        ..FinetuneConfig::default()
    };
    let tune = finetune_job(&config, &source, Resources::ANY);
    cluster
        .handle
        .submit("s".into(), "tune".into(), 0, vec![tune.clone()])
        .await
        .unwrap();
    // Wait for two lifetimes, then lose the agent that runs the job.
    loop {
        let job = tune.id.clone();
        let done = cluster
            .handle
            .inspect(move |state, _| state.job(&job).unwrap().completed_lifetimes)
            .await
            .unwrap();
        if done >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (stop, task) = cluster.agents.remove(0);
    stop.send(true).unwrap();
    task.await.unwrap();
    cluster.handle.lose_agent("agent-0".into()).await.unwrap();
    cluster.add_agent(&data, &dir.path().join("agent-1"));
    cluster.wait_done("s", Duration::from_secs(240)).await;

    let job = tune.id.clone();
    let state = cluster
        .handle
        .inspect(move |state, _| state.job(&job).unwrap().clone())
        .await
        .unwrap();
    assert!(
        matches!(state.state, JobState::Succeeded { attempt: 2, .. }),
        "{:?}",
        state.state
    );
    let stored = cluster.stored_metrics(&tune.id).await;
    assert_eq!(stored.len(), 4, "every lifetime exactly once");
    let source_hash = match cluster
        .handle
        .inspect({
            let id = source.id.clone();
            move |s, _| s.job(&id).unwrap().state.clone()
        })
        .await
        .unwrap()
    {
        JobState::Succeeded {
            output: Some(hash), ..
        } => hash,
        other => panic!("{other:?}"),
    };
    let reference = reference_run(
        &read_artifact(&cluster.artifacts, &source_hash),
        &source_hash,
        &config,
        &data,
        dir.path(),
    );
    assert_eq!(
        comparable(&stored),
        comparable(&reference),
        "a resumed job ends where an uninterrupted one does"
    );
    for (stop, task) in cluster.agents {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

/// A coordinator that can be stopped and started again on the same address and state.
struct Restartable {
    handle: CoordinatorHandle,
    artifacts: ArtifactStore,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    event_loop: std::thread::JoinHandle<()>,
}

async fn start_at(
    state_dir: &Path,
    address: std::net::SocketAddr,
) -> (Restartable, std::net::SocketAddr) {
    let store = Store::open(state_dir).unwrap();
    let artifacts = ArtifactStore::open(&state_dir.join("artifacts")).unwrap();
    let (handle, event_loop) = spawn_event_loop(
        store,
        Timing {
            heartbeat_interval_ms: 100,
            ..Timing::default()
        },
        SystemClock,
    )
    .unwrap();
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
    (
        Restartable {
            handle,
            artifacts,
            stop,
            server,
            event_loop,
        },
        bound,
    )
}

impl Restartable {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap();
        self.handle.stop();
        tokio::task::spawn_blocking(move || self.event_loop.join().unwrap())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_rides_out_a_coordinator_restart_and_its_job_finishes_on_the_same_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = dir.path().join("state");
    synth(&data);
    let (coordinator, address) = start_at(&state, "127.0.0.1:0".parse().unwrap()).await;
    let source = source_job(
        &SourceConfig {
            epochs: 1,
            batch_size: 16,
            lr: 0.02,
            ..SourceConfig::default()
        },
        Resources::ANY,
    );
    let config = FinetuneConfig {
        method: Method::Ndhtl,
        lifetimes: 4,
        k: 3,
        lr: 1e-3,
        ..FinetuneConfig::default()
    };
    let tune = finetune_job(&config, &source, Resources::ANY);
    coordinator
        .handle
        .submit(
            "s".into(),
            "restart".into(),
            0,
            vec![source.clone(), tune.clone()],
        )
        .await
        .unwrap();
    let mut agents = Cluster {
        handle: coordinator.handle.clone(),
        address: format!("http://{address}"),
        artifacts: coordinator.artifacts.clone(),
        agents: Vec::new(),
    };
    agents.add_agent(&data, &dir.path().join("agent"));

    // Let the fine-tune record a lifetime, then take the coordinator down mid-job.
    loop {
        let job = tune.id.clone();
        let done = coordinator
            .handle
            .inspect(move |s, _| s.job(&job).unwrap().completed_lifetimes)
            .await
            .unwrap();
        if done >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    coordinator.shutdown().await;
    tokio::time::sleep(Duration::from_millis(800)).await; // the agent keeps training and retrying
    let (coordinator, _) = start_at(&state, address).await;
    agents.handle = coordinator.handle.clone();
    agents.wait_done("s", Duration::from_secs(240)).await;

    let job = tune.id.clone();
    let finished = coordinator
        .handle
        .inspect(move |s, _| s.job(&job).unwrap().state.clone())
        .await
        .unwrap();
    assert!(
        matches!(finished, JobState::Succeeded { attempt: 1, .. }),
        "kept its lease through the restart: {finished:?}"
    );
    let stored = agents.stored_metrics(&tune.id).await;
    assert_eq!(stored.len(), 4, "every lifetime exactly once");
    let source_hash = match coordinator
        .handle
        .inspect({
            let id = source.id.clone();
            move |s, _| s.job(&id).unwrap().state.clone()
        })
        .await
        .unwrap()
    {
        JobState::Succeeded {
            output: Some(hash), ..
        } => hash,
        other => panic!("{other:?}"),
    };
    let reference = reference_run(
        &read_artifact(&coordinator.artifacts, &source_hash),
        &source_hash,
        &config,
        &data,
        dir.path(),
    );
    assert_eq!(comparable(&stored), comparable(&reference));
    for (stop, task) in agents.agents {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
    coordinator.shutdown().await;
}
