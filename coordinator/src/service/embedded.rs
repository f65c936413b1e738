//! A coordinator inside this process: the store, the event loop, the gRPC server and, when
//! asked, the HTTP server, started together over one state folder and stopped in order.
//!
//! The `ndhtl-coordinator` process ([`super::run::run_coordinator`]), the coordinator that
//! `ndhtl run` embeds next to its local agents, and the test harnesses all start it this way,
//! so the order of start and stop is written once:
//! - start: take the state folder's lock and open the store and artifacts, start the event
//!   loop, bind the listeners, serve;
//! - stop: stop accepting and finish the calls in flight (gRPC, then HTTP), then stop the
//!   event loop and wait for it, which closes the store and releases the folder. Every
//!   answered call is already persisted before that.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::clock::SystemClock;
use super::event_loop::{CoordinatorHandle, spawn_event_loop_with};
use super::http::serve_http;
use super::server::serve;
use crate::datasets::fetcher::DatasetSource;
use crate::state::Timing;
use crate::store::{ArtifactError, ArtifactStore, Store, StoreError};

/// What an in-process coordinator opens and serves.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The SQLite database and the artifact folder live here; a folder left by an earlier run
    /// is resumed.
    pub state_dir: PathBuf,
    /// The gRPC API (agents and sweeps); port 0 picks a free one, see
    /// [`EmbeddedCoordinator::address`].
    pub listen: SocketAddr,
    /// HTTP (`/healthz`, `/metrics`); `None` serves none.
    pub http_listen: Option<SocketAddr>,
    pub timing: Timing,
    /// Where the coordinator fetches the CIFAR archives it serves; `None` serves none.
    pub datasets: Option<DatasetSource>,
}

impl EmbeddedOptions {
    /// gRPC on `listen`, no HTTP, no datasets served.
    pub fn grpc_only(state_dir: impl Into<PathBuf>, listen: SocketAddr, timing: Timing) -> Self {
        EmbeddedOptions {
            state_dir: state_dir.into(),
            listen,
            http_listen: None,
            timing,
            datasets: None,
        }
    }
}

/// Why a coordinator could not start, or did not stop cleanly.
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
    /// A bug: the task or thread named panicked. Its message is in the log.
    #[error("the coordinator's {0} panicked")]
    Panicked(&'static str),
}

/// A running coordinator. Stop it with [`EmbeddedCoordinator::shutdown`] (or
/// [`EmbeddedCoordinator::serve_until`]), which waits for every part to end. Dropped instead,
/// its servers stop accepting; nothing answered is lost either way, since every answered call
/// is persisted first.
pub struct EmbeddedCoordinator {
    handle: CoordinatorHandle,
    artifacts: ArtifactStore,
    address: SocketAddr,
    http_address: Option<SocketAddr>,
    stop_servers: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    event_loop: std::thread::JoinHandle<()>,
}

impl EmbeddedCoordinator {
    /// Opens the state, starts the event loop and serves. Must be called inside a Tokio runtime.
    pub async fn start(options: EmbeddedOptions) -> Result<Self, RunError> {
        // One coordinator per folder: a second one is refused here, before it serves anything.
        let store = Store::open_exclusive(&options.state_dir)?;
        let artifacts = ArtifactStore::open(&options.state_dir.join("artifacts"))?;
        let (handle, event_loop) =
            spawn_event_loop_with(store, options.timing, SystemClock, options.datasets)?;
        let listeners = async {
            let grpc = bind(options.listen).await?;
            let http = match options.http_listen {
                Some(address) => Some(bind(address).await?),
                None => None,
            };
            Ok::<_, RunError>((grpc, http))
        };
        let ((grpc_listener, address), http) = match listeners.await {
            Ok(listeners) => listeners,
            Err(error) => {
                // Nothing was served: stop the event loop (which closes the store and frees
                // the folder) rather than leave its thread behind.
                handle.stop();
                let _ = tokio::task::spawn_blocking(move || event_loop.join()).await;
                return Err(error);
            }
        };
        let (http_listener, http_address) = http.unzip();
        let (stop_servers, servers_stopped) = watch::channel(false);
        let http = http_listener.map(|listener| {
            tokio::spawn(serve_http(
                listener,
                handle.clone(),
                stopped(servers_stopped.clone()),
            ))
        });
        let grpc = tokio::spawn(serve(
            grpc_listener,
            handle.clone(),
            artifacts.clone(),
            stopped(servers_stopped),
        ));
        tracing::debug!(%address, http = ?http_address, state_dir = %options.state_dir.display(), "coordinator started");
        Ok(EmbeddedCoordinator {
            handle,
            artifacts,
            address,
            http_address,
            stop_servers,
            grpc,
            http,
            event_loop,
        })
    }

    /// Commands to the event loop, as the gRPC services send them.
    pub fn handle(&self) -> &CoordinatorHandle {
        &self.handle
    }

    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// The gRPC address actually bound (the free port when `listen` asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The gRPC endpoint as clients and agents take it: `http://<address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The HTTP address actually bound, when HTTP is served.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_address
    }

    /// Serves until `signal` resolves (or the gRPC server fails on its own), then shuts down.
    pub async fn serve_until(mut self, signal: impl Future<Output = ()>) -> Result<(), RunError> {
        let ended_early = tokio::select! {
            () = signal => None,
            served = &mut self.grpc => Some(served),
        };
        match ended_early {
            None => self.shutdown().await,
            Some(served) => {
                tracing::error!("the gRPC server stopped before it was asked to");
                let stopped = self.stop_after_grpc().await;
                served.map_err(|_| RunError::Panicked("gRPC server"))??;
                stopped
            }
        }
    }

    /// Stops serving (calls in flight finish), then stops the event loop and waits for it.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        let _ = self.stop_servers.send(true);
        let served = (&mut self.grpc).await;
        let stopped = self.stop_after_grpc().await;
        served.map_err(|_| RunError::Panicked("gRPC server"))??;
        stopped
    }

    /// The steps of a stop after the gRPC server has ended: HTTP, then the event loop.
    async fn stop_after_grpc(self) -> Result<(), RunError> {
        let _ = self.stop_servers.send(true);
        if let Some(http) = self.http {
            match http.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "the HTTP server failed"),
                Err(error) => tracing::warn!(%error, "the HTTP server panicked"),
            }
        }
        self.handle.stop();
        let event_loop = self.event_loop;
        match tokio::task::spawn_blocking(move || event_loop.join()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(RunError::Panicked("event loop")),
        }
    }
}

/// A listener on `address`, and the address it got (the free port when asked for port 0).
async fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), RunError> {
    let listen_error = |source| RunError::Listen { address, source };
    let listener = TcpListener::bind(address).await.map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    Ok((listener, bound))
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
