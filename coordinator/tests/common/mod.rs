//! The coordinator the gRPC tests talk to: the embedded coordinator (the real store, event loop
//! and server in this process) on a free port of 127.0.0.1, as `ndhtl run` starts it; and the
//! job the tests submit. Each test binary uses a part of it.
#![allow(dead_code)]

use ndhtl_coordinator::domain::{JobKind, JobSpec, Resources};
use ndhtl_coordinator::service::{EmbeddedCoordinator, EmbeddedOptions};
use ndhtl_coordinator::state::Timing;
use tonic::transport::Channel;

/// A coordinator over the state in `state_dir` (a fresh one, or one left by an earlier run).
/// Stop it with `shutdown().await.unwrap()`, which also fails on a panicked event loop.
pub async fn start(state_dir: &std::path::Path, timing: Timing) -> EmbeddedCoordinator {
    let any_port = "127.0.0.1:0".parse().unwrap();
    EmbeddedCoordinator::start(EmbeddedOptions::grpc_only(state_dir, any_port, timing))
        .await
        .unwrap()
}

/// A connected channel for any of the coordinator's services.
pub async fn channel(coordinator: &EmbeddedCoordinator) -> Channel {
    Channel::from_shared(coordinator.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A fine-tune job of T1 with no dependency, runnable on any agent.
pub fn spec(id: &str) -> JobSpec {
    JobSpec {
        id: id.into(),
        kind: JobKind::Finetune,
        config_json: r#"{"task":"T1"}"#.into(),
        depends_on: None,
        resources: Resources::ANY,
    }
}
