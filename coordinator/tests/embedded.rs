//! The embedded coordinator (what `ndhtl-coordinator`, `ndhtl run` and the test harnesses
//! start): it serves gRPC and HTTP on the ports it reports, holds its state folder alone, and a
//! stop frees the ports and the folder, with the state kept for the next start.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{channel, spec};
use ndhtl_coordinator::service::embedded::RunError;
use ndhtl_coordinator::service::{EmbeddedCoordinator, EmbeddedOptions};
use ndhtl_coordinator::state::Timing;
use ndhtl_coordinator::store::StoreError;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TIMING: Timing = Timing {
    lease_timeout_ms: 10_000,
    heartbeat_interval_ms: 100,
    agent_timeout_ms: 60_000,
    max_attempts: 3,
};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The status line of `GET path` over plain HTTP/1.1.
fn http_status_line(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

async fn grpc_health(coordinator: &EmbeddedCoordinator) -> ServingStatus {
    let response = HealthClient::new(channel(coordinator).await)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "ndhtl.v1.SweepService".into(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_serves_on_the_ports_it_reports_and_a_stop_frees_them_and_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        http_listen: Some(any_port()),
        ..EmbeddedOptions::grpc_only(dir.path(), any_port(), TIMING)
    };
    let coordinator = EmbeddedCoordinator::start(options.clone()).await.unwrap();
    let (grpc, http) = (
        coordinator.address(),
        coordinator.http_address().expect("HTTP asked for"),
    );
    assert_ne!(grpc.port(), 0, "the bound port, not the one asked for");
    assert_eq!(coordinator.url(), format!("http://{grpc}"));
    assert_eq!(grpc_health(&coordinator).await, ServingStatus::Serving);
    let status = tokio::task::spawn_blocking(move || http_status_line(http, "/healthz"))
        .await
        .unwrap();
    assert!(status.contains(" 200 "), "{status}");

    // A second coordinator over the same folder is refused before it serves anything.
    let refused = EmbeddedCoordinator::start(options.clone())
        .await
        .err()
        .expect("the folder is taken");
    assert!(
        matches!(&refused, RunError::Store(StoreError::Locked { state_dir, .. }) if state_dir == dir.path()),
        "{refused}"
    );

    coordinator.shutdown().await.unwrap();
    assert!(TcpStream::connect(grpc).is_err(), "gRPC port closed");
    assert!(TcpStream::connect(http).is_err(), "HTTP port closed");
    // The folder is free again.
    let again = EmbeddedCoordinator::start(options).await.unwrap();
    again.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_listen_error_that_names_it_and_leaves_the_folder_free() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind(any_port()).unwrap();
    let taken_address = taken.local_addr().unwrap();
    let error = EmbeddedCoordinator::start(EmbeddedOptions::grpc_only(
        dir.path(),
        taken_address,
        TIMING,
    ))
    .await
    .err()
    .expect("the port is taken");
    match &error {
        RunError::Listen { address, .. } => assert_eq!(*address, taken_address),
        other => panic!("expected a listen error, got {other}"),
    }
    assert!(
        error.to_string().contains(&taken_address.to_string()),
        "{error}"
    );
    // The failed start stopped its event loop, which closed the store and released the
    // folder: a start on a free port takes it.
    let coordinator =
        EmbeddedCoordinator::start(EmbeddedOptions::grpc_only(dir.path(), any_port(), TIMING))
            .await
            .unwrap();
    coordinator.shutdown().await.unwrap();
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_until_stops_on_its_signal_and_the_next_start_has_the_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions::grpc_only(dir.path(), any_port(), TIMING);
    let coordinator = EmbeddedCoordinator::start(options.clone()).await.unwrap();
    coordinator
        .handle()
        .submit("s".into(), "sweep".into(), 0, vec![spec("a"), spec("b")])
        .await
        .unwrap();
    let grpc = coordinator.address();
    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(coordinator.serve_until(async {
        let _ = signalled.await;
    }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!serving.is_finished(), "serves until the signal");
    assert!(TcpStream::connect(grpc).is_ok(), "and accepts meanwhile");
    signal.send(()).unwrap();
    serving.await.unwrap().unwrap();
    assert!(TcpStream::connect(grpc).is_err(), "stopped");

    let restarted = EmbeddedCoordinator::start(options).await.unwrap();
    let counts = restarted.handle().counts("s".into()).await.unwrap();
    assert_eq!((counts.queued, counts.total()), (2, 2));
    restarted.shutdown().await.unwrap();
}
