//! Running a coordinator process: open the state, start the event loop and the gRPC server,
//! stop gracefully on SIGTERM or Ctrl-C. Used by `ndhtl coordinator` and `ndhtl-coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::clock::SystemClock;
use super::event_loop::spawn_event_loop_with;
use super::http::serve_http;
use super::server::serve;
use crate::datasets::FetchPolicy;
use crate::datasets::fetcher::DatasetSource;
use crate::state::Timing;
use crate::store::{ArtifactError, ArtifactStore, Store, StoreError};

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

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
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
    let store = Store::open(&options.state_dir)?;
    let artifacts = ArtifactStore::open(&options.state_dir.join("artifacts"))?;
    let snapshot_jobs = store.load()?.jobs.len();
    let datasets = (options.datasets.policy != FetchPolicy::Off).then(|| {
        DatasetSource::official(
            options.datasets.policy,
            Some(&options.datasets.mirror),
            &options.state_dir,
            artifacts.clone(),
        )
    });
    let (handle, event_loop) = spawn_event_loop_with(store, options.timing, SystemClock, datasets)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| RunError::Listen {
            address: options.listen,
            source,
        })?;
    let http_listener = match options.http_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| RunError::Listen { address, source })?,
        ),
        None => None,
    };
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        http = %http_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or("off".to_string(), |a| a.to_string()),
        state_dir = %options.state_dir.display(),
        jobs = snapshot_jobs,
        version = crate::VERSION,
        "coordinator serving"
    );
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let http = http_listener.map(|listener| {
        let mut stopped = http_stopped.clone();
        tokio::spawn(serve_http(listener, handle.clone(), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }))
    });
    let served = serve(listener, handle.clone(), artifacts, shutdown).await;
    let _ = stop_http.send(true);
    if let Some(http) = http {
        match http.await {
            Ok(Err(error)) => tracing::warn!(%error, "the HTTP server failed"),
            Err(error) => tracing::warn!(%error, "the HTTP server panicked"),
            Ok(Ok(())) => {}
        }
    }
    served?;
    tracing::info!("coordinator stopping");
    handle.stop();
    let _ = tokio::task::spawn_blocking(move || event_loop.join()).await;
    Ok(())
}
