//! `ndhtl coordinator` and `ndhtl agent`: the two long-running processes of a cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ndhtl_agent::device::{BackendKind, ComputeDevice, DeviceSpec, build_info, slot_devices};
use ndhtl_agent::runtime::datasets::UNAVAILABLE_WAIT;
use ndhtl_agent::runtime::runner::NdhtlRunner;
use ndhtl_agent::runtime::{AgentOptions, run_agent_draining};
use ndhtl_coordinator::service::cli::CoordinatorArgs;
use ndhtl_coordinator::service::run::{run_coordinator, termination_signal};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The coordinator's gRPC address.
    #[arg(
        long,
        env = "NDHTL_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    pub coordinator: String,
    /// Jobs run at once: on the CPU, as many as the cores allow (batch-1 jobs gain little from
    /// a second thread, so one slot per core is a good start); on GPUs, jobs per GPU (a batch-1
    /// job leaves most of a GPU idle, so a few per GPU finish a sweep sooner).
    #[arg(long, env = "NDHTL_SLOTS", default_value_t = 1)]
    pub slots: u32,
    /// `cpu`; `cuda` for every GPU of the machine, `--slots` jobs each; or `cuda:N` for one GPU
    /// (GPUs need the tch build).
    #[arg(long, env = "NDHTL_DEVICE", default_value = "cpu")]
    pub device: String,
    /// CPU threads each job may use, so that several CPU slots do not oversubscribe the cores
    /// (default: cores ÷ slots on the CPU, the library default on a GPU).
    #[arg(long, env = "NDHTL_THREADS_PER_SLOT")]
    pub threads_per_slot: Option<usize>,
    /// On SIGTERM, lease nothing new and let running jobs finish for up to this long (set the
    /// pod's termination grace period above it); then, or on a second signal, stop them at
    /// their next step: their last lifetime checkpoint is with the coordinator.
    #[arg(long, env = "NDHTL_DRAIN_SECS", default_value_t = 300)]
    pub drain_secs: u64,
    /// Fault injection for chaos tests: send every metrics report twice.
    #[arg(long, hide = true, env = "NDHTL_CHAOS_DUPLICATE_REPORTS")]
    pub chaos_duplicate_reports: bool,
    /// Backend (default: tch when compiled in, else flex).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Data folder with cifar-10-batches-bin/ and cifar-100-binary/ on this machine. A dataset
    /// missing here is downloaded from the coordinator (which fetches the official archives
    /// once) and kept under the work folder. Jobs on generated data need none: the agent makes
    /// it.
    #[arg(long, env = "NDHTL_DATA", default_value = "data")]
    pub data: PathBuf,
    /// Job folders and the artifact cache of this agent.
    #[arg(long, env = "NDHTL_WORK_DIR", default_value = "ndhtl-agent")]
    pub work_dir: PathBuf,
    /// How long a job waits for a dataset the coordinator cannot serve right now (its fetch
    /// failed, or it does not answer) before the attempt fails and goes back to the queue.
    #[arg(long, env = "NDHTL_DATASET_WAIT_SECS", default_value_t = UNAVAILABLE_WAIT.as_secs())]
    pub dataset_wait_secs: u64,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn coordinator(args: CoordinatorArgs) -> Result<()> {
    runtime()?.block_on(run_coordinator(args.into_options(), termination_signal()))?;
    Ok(())
}

pub fn agent(args: AgentArgs) -> Result<()> {
    let spec: DeviceSpec = args.device.parse()?;
    let device = ComputeDevice::resolve(spec, args.backend)?;
    let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "agent".into());
    let slot_devices = slot_devices(spec, args.slots)?;
    let threads_per_slot = args.threads_per_slot.or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (spec == DeviceSpec::Cpu).then(|| (cores / slot_devices.len()).max(1))
    });
    tracing::info!(slots = slot_devices.len(), ?threads_per_slot, build = %build_info(), "agent starting");
    let options = AgentOptions {
        coordinator: args.coordinator,
        slot_devices,
        threads_per_slot,
        backend: device.backend,
        data_dir: args.data.clone(),
        work_dir: args.work_dir.clone(),
        hostname,
        idle_poll: Duration::from_millis(500),
        duplicate_reports: args.chaos_duplicate_reports,
        dataset_poll: Duration::from_secs(2),
        dataset_wait: Duration::from_secs(args.dataset_wait_secs),
    };
    let runner = Arc::new(NdhtlRunner {
        data_dir: args.data,
        generated_data_dir: args.work_dir.join("data"),
        backend: Some(device.backend),
    });
    let drain_for = Duration::from_secs(args.drain_secs);
    runtime()?.block_on(async move {
        let (drain, draining) = tokio::sync::watch::channel(false);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            termination_signal().await;
            tracing::info!(drain_secs = drain_for.as_secs(), "draining: no new jobs; running jobs may finish");
            let _ = drain.send(true);
            tokio::select! {
                _ = tokio::time::sleep(drain_for) => {}
                _ = termination_signal() => {}
            }
            tracing::info!("stopping: running jobs stop at their next step; their last checkpoints stay with the coordinator");
            let _ = stop.send(true);
        });
        run_agent_draining(options, runner, draining, stopped).await
    })?;
    Ok(())
}
