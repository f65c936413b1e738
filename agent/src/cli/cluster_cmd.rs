//! `ndhtl coordinator` and `ndhtl agent`: the two long-running processes of a cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ndhtl_agent::device::{BackendKind, ComputeDevice, DeviceSpec};
use ndhtl_agent::runtime::runner::NdhtlRunner;
use ndhtl_agent::runtime::{AgentOptions, run_agent};
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
    /// Jobs run at once. On a GPU agent, one job per GPU; on CPU, as many as the cores allow
    /// (batch-1 jobs gain little from a second thread, so one slot per core is a good start).
    #[arg(long, env = "NDHTL_SLOTS", default_value_t = 1)]
    pub slots: u32,
    /// `cpu`, or `cuda:N` for one GPU (needs the tch build).
    #[arg(long, env = "NDHTL_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Backend (default: tch when compiled in, else flex).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Data folder with cifar-10-batches-bin/ and cifar-100-binary/ on this machine.
    #[arg(long, env = "NDHTL_DATA")]
    pub data: PathBuf,
    /// Job folders and the artifact cache of this agent.
    #[arg(long, env = "NDHTL_WORK_DIR", default_value = "ndhtl-agent")]
    pub work_dir: PathBuf,
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
    let options = AgentOptions {
        coordinator: args.coordinator,
        slots: args.slots.max(1),
        device: spec,
        backend: device.backend,
        work_dir: args.work_dir,
        hostname,
        idle_poll: Duration::from_millis(500),
    };
    let runner = Arc::new(NdhtlRunner {
        data_dir: args.data,
        backend: Some(device.backend),
    });
    runtime()?.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            termination_signal().await;
            tracing::info!("stopping: running jobs stop at their next step; their last checkpoints stay with the coordinator");
            let _ = stop.send(true);
        });
        run_agent(options, runner, stopped).await
    })?;
    Ok(())
}
