//! The sweep service over real gRPC on 127.0.0.1: a sweep is checked as fully by the
//! coordinator as by `ndhtl` (targets and source tasks against the class tables), a refused
//! sweep names the file, line and key and stores nothing, and a good one is stored.

mod common;

use common::{channel, start};
use ndhtl_coordinator::state::Timing;
use ndhtl_proto::v1;
use ndhtl_proto::v1::sweep_service_client::SweepServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const TIMING: Timing = Timing {
    lease_timeout_ms: 10_000,
    heartbeat_interval_ms: 1_000,
    agent_timeout_ms: 60_000,
    max_attempts: 3,
};

fn submit_request(yaml: &str) -> v1::SubmitSweepRequest {
    v1::SubmitSweepRequest {
        yaml: yaml.into(),
        file_name: "grid.yaml".into(),
        priority: 0,
    }
}

async fn sweep_count(client: &mut SweepServiceClient<Channel>) -> usize {
    client
        .get_status(v1::GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sweeps
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_classes_and_source_tasks_are_refused_with_their_place_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), TIMING).await;
    let mut client = SweepServiceClient::new(channel(&running).await);

    // Each looks like a task by its syntax; only the class tables tell them apart.
    let refused = [
        (
            "name: typo\nfinetune:\n  target: [T1, \"cifar100:apple,aple\"]\n  method: stl\n",
            "grid.yaml:3",
            "finetune.target",
            "unknown cifar100 class `aple`; did you mean `apple`?",
        ),
        (
            "name: super\nfinetune:\n  target: \"cifar100:super=dragons,fish\"\n",
            "grid.yaml:3",
            "finetune.target",
            "unknown CIFAR-100 superclass `dragons`",
        ),
        (
            "name: one\nfinetune:\n  target: T1\ninclude:\n  - {target: \"cifar10:cat\"}\n",
            "grid.yaml:5",
            "include[0].target",
            "needs at least 2 classes",
        ),
        (
            "name: source\nsource:\n  task: [cifar10, \"cifar10:cat,wolf\"]\nfinetune:\n  target: T2\n",
            "grid.yaml:3",
            "source.task",
            "unknown cifar10 class `wolf`",
        ),
    ];
    for (yaml, place, key, reason) in refused {
        let status = client
            .submit_sweep(submit_request(yaml))
            .await
            .expect_err(yaml);
        assert_eq!(status.code(), Code::InvalidArgument, "{yaml}");
        let message = status.message();
        for expected in [place, key, reason] {
            assert!(
                message.contains(expected),
                "`{expected}` missing from: {message}"
            );
        }
    }
    assert_eq!(
        sweep_count(&mut client).await,
        0,
        "a refused sweep stores nothing"
    );

    // The same grammar accepted: names, indices, superclasses and a source subset.
    let accepted = "name: custom\nsource:\n  task: \"cifar10:cat,dog,3\"\n  epochs: 2\nfinetune:\n  target: [T1, \"cifar100:apple,4\", \"cifar100:super=fish,flowers\"]\n  method: stl\n";
    let response = client
        .submit_sweep(submit_request(accepted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.jobs, 4, "one source and three fine-tunes");
    assert_eq!(sweep_count(&mut client).await, 1);
    running.shutdown().await.unwrap();
}
