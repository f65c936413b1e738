//! Running a coordinator process: the embedded coordinator over the options of the command
//! line, with the official CIFAR archives, stopped gracefully on SIGTERM or Ctrl-C. Used by
//! `ndhtl coordinator` and `ndhtl-coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;

pub use super::embedded::RunError;
use super::embedded::{EmbeddedCoordinator, EmbeddedOptions};
use crate::datasets::FetchPolicy;
use crate::datasets::fetcher::DatasetSource;
use crate::state::Timing;
use crate::store::ArtifactStore;

#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    pub listen: SocketAddr,
    /// HTTP (`/healthz`, `/metrics`); `None` serves none.
    pub http_listen: Option<SocketAddr>,
    /// The SQLite database and the artifact folder live here.
    pub state_dir: PathBuf,
    pub timing: Timing,
    pub datasets: DatasetOptions,
}

/// How the coordinator fetches the CIFAR archives it serves.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    pub policy: FetchPolicy,
    /// Base URL of the archives.
    pub mirror: String,
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves until `shutdown` resolves. Every answered call is already persisted, so a SIGKILL
/// loses nothing either; a graceful stop only finishes the calls in flight.
pub async fn run_coordinator(
    options: CoordinatorOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let datasets = match options.datasets.policy {
        FetchPolicy::Off => None,
        policy => Some(DatasetSource::official(
            policy,
            Some(&options.datasets.mirror),
            &options.state_dir,
            // The folder the coordinator serves artifacts from (a store is its path).
            ArtifactStore::open(&options.state_dir.join("artifacts"))?,
        )),
    };
    let coordinator = EmbeddedCoordinator::start(EmbeddedOptions {
        state_dir: options.state_dir.clone(),
        listen: options.listen,
        http_listen: options.http_listen,
        timing: options.timing,
        datasets,
    })
    .await?;
    let jobs = coordinator
        .handle()
        .inspect(|state, _| state.jobs().count())
        .await
        .unwrap_or_default();
    tracing::info!(
        listen = %coordinator.address(),
        http = %coordinator
            .http_address()
            .map_or("off".to_string(), |address| address.to_string()),
        state_dir = %options.state_dir.display(),
        jobs,
        version = crate::VERSION,
        "coordinator serving"
    );
    coordinator.serve_until(shutdown).await?;
    tracing::info!("coordinator stopped");
    Ok(())
}
