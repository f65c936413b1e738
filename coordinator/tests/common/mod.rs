//! The coordinator the gRPC tests talk to: the real store, event loop and server in this
//! process, on a free port of 127.0.0.1, stopped cleanly by [`Running::shutdown`].

use ndhtl_coordinator::service::server::serve;
use ndhtl_coordinator::service::{CoordinatorHandle, SystemClock, spawn_event_loop};
use ndhtl_coordinator::state::Timing;
use ndhtl_coordinator::store::{ArtifactStore, Store};
use tonic::transport::Channel;

pub struct Running {
    pub handle: CoordinatorHandle,
    pub address: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    event_loop: std::thread::JoinHandle<()>,
}

/// A coordinator over the state in `state_dir` (a fresh one, or one left by an earlier run).
pub async fn start(state_dir: &std::path::Path, timing: Timing) -> Running {
    let store = Store::open(state_dir).unwrap();
    let artifacts = ArtifactStore::open(&state_dir.join("artifacts")).unwrap();
    let (handle, event_loop) = spawn_event_loop(store, timing, SystemClock).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_handle = handle.clone();
    let server = tokio::spawn(async move {
        serve(listener, server_handle, artifacts, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        handle,
        address,
        stop,
        server,
        event_loop,
    }
}

impl Running {
    /// Stops the server, then the event loop, and waits for both.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap();
        self.handle.stop();
        tokio::task::spawn_blocking(move || self.event_loop.join().unwrap())
            .await
            .unwrap();
    }

    /// A connected channel for any of the coordinator's services.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.address.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}
