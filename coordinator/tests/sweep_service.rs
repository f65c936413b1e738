//! The sweep service over real gRPC on 127.0.0.1: a sweep is checked as fully by the
//! coordinator as by `ndhtl` (targets and source tasks against the class tables), a refused
//! sweep names the file, line and key and stores nothing, and a good one is stored; a sweep
//! submitted again runs its failed jobs again only when asked.

mod common;

use common::{channel, start};
use ndhtl_coordinator::state::Timing;
use ndhtl_proto::v1;
use ndhtl_proto::v1::agent_service_client::AgentServiceClient;
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
        retry_failed: false,
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

async fn sweep_status(client: &mut SweepServiceClient<Channel>, sweep: &str) -> v1::SweepStatus {
    client
        .get_status(v1::GetStatusRequest {
            sweep_id: sweep.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .sweeps
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_run_again_only_when_the_sweep_is_resubmitted_with_retry_failed() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), TIMING).await;
    let mut sweeps = SweepServiceClient::new(channel(&running).await);
    let mut agents = AgentServiceClient::new(channel(&running).await);
    let yaml = "name: retry\nsource: {epochs: 1}\nfinetune:\n  target: [T1, T2]\n  method: stl\n";
    let submitted = sweeps
        .submit_sweep(submit_request(yaml))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((submitted.jobs, submitted.retried), (3, 0));
    let agent = agents
        .register(v1::RegisterRequest {
            capabilities: Some(v1::AgentCapabilities {
                backend: "flex".into(),
                devices: vec![v1::Device {
                    kind: "cpu".into(),
                    name: "cpu".into(),
                    ..Default::default()
                }],
                slots: 1,
                version: ndhtl_coordinator::VERSION.into(),
                hostname: "test".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agent_id;
    let lease = |agents: &mut AgentServiceClient<Channel>| {
        let mut agents = agents.clone();
        let agent = agent.clone();
        async move {
            agents
                .lease_job(v1::LeaseJobRequest {
                    agent_id: agent,
                    slot: 0,
                })
                .await
                .unwrap()
                .into_inner()
                .lease
        }
    };
    let source = lease(&mut agents).await.expect("the source job");
    assert_eq!(
        (source.kind.as_str(), source.job.as_ref().unwrap().attempt),
        ("source", 1)
    );
    let retried = agents
        .fail_job(v1::FailJobRequest {
            agent_id: agent.clone(),
            job: source.job.clone(),
            error: "CUDA out of memory".into(),
            retryable: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!retried.will_retry);
    let status = sweep_status(&mut sweeps, &submitted.sweep_id).await;
    assert_eq!(
        (status.failed, status.queued),
        (3, 0),
        "the fine-tunes fail with their source"
    );
    // Each failure says what the job trains.
    let mut described: Vec<&str> = status
        .failures
        .iter()
        .map(|failure| failure.description.as_str())
        .collect();
    described.sort();
    assert_eq!(
        described,
        [
            "T1 stl seed 0, lr 0.0001",
            "T2 stl seed 0, lr 0.0001",
            "source model: cifar10 seed 0, 1 epoch"
        ]
    );

    // Submitted again as it was (a rerun): the same sweep, its failures kept.
    let again = sweeps
        .submit_sweep(submit_request(yaml))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.sweep_id.as_str(), again.retried),
        (submitted.sweep_id.as_str(), 0)
    );
    assert_eq!(
        sweep_status(&mut sweeps, &submitted.sweep_id).await.failed,
        3
    );
    assert!(lease(&mut agents).await.is_none());

    // With retry_failed: all three queued, the source first, as a new attempt number.
    let retry = sweeps
        .submit_sweep(v1::SubmitSweepRequest {
            retry_failed: true,
            ..submit_request(yaml)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((retry.jobs, retry.retried), (3, 3));
    let status = sweep_status(&mut sweeps, &submitted.sweep_id).await;
    assert_eq!((status.failed, status.queued), (0, 3));
    let source_again = lease(&mut agents).await.expect("the source again");
    assert_eq!(
        source_again.job,
        Some(v1::JobAttempt {
            job_id: source.job.unwrap().job_id,
            attempt: 2
        })
    );

    // A cancelled sweep's jobs are not retried, and the caller is told why.
    sweeps
        .cancel_sweep(v1::CancelSweepRequest {
            sweep_id: submitted.sweep_id.clone(),
        })
        .await
        .unwrap();
    let refused = sweeps
        .submit_sweep(v1::SubmitSweepRequest {
            retry_failed: true,
            ..submit_request(yaml)
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("was cancelled"),
        "{}",
        refused.message()
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_is_named_by_its_id_its_name_or_a_prefix_only_its_id_has() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), TIMING).await;
    let mut client = SweepServiceClient::new(channel(&running).await);
    // The same sweep name twice: a YAML edited and submitted again is a new sweep.
    let mut ids = Vec::new();
    for target in ["T1", "T2"] {
        let yaml = format!("name: grid\nfinetune:\n  target: {target}\n  method: stl\n");
        let response = client
            .submit_sweep(submit_request(&yaml))
            .await
            .unwrap()
            .into_inner();
        ids.push(response.sweep_id);
    }
    let (first, latest) = (ids[0].clone(), ids[1].clone());
    assert_ne!(first, latest);
    let status_of = |wanted: &str| {
        let mut client = client.clone();
        let wanted = wanted.to_string();
        async move {
            client
                .get_status(v1::GetStatusRequest { sweep_id: wanted })
                .await
                .map(|response| response.into_inner().sweeps[0].sweep_id.clone())
        }
    };
    assert_eq!(status_of(&first).await.unwrap(), first);
    assert_eq!(
        status_of("grid").await.unwrap(),
        latest,
        "a shared name: the latest"
    );
    let unique_prefix = &first[..first.len() - 2];
    assert_eq!(status_of(unique_prefix).await.unwrap(), first);
    assert_eq!(status_of("nope").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        status_of("grid-").await.unwrap_err().code(),
        Code::InvalidArgument,
        "a prefix of both ids"
    );

    // Results and reports say which sweep they are of.
    let results = client
        .fetch_results(v1::FetchResultsRequest {
            sweep_id: "grid".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(results.sweep_id, latest);
    let report = client
        .get_report(v1::GetReportRequest {
            sweep_id: unique_prefix.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.sweep_id, first);

    // A cancel needs one sweep: the shared name is refused and nothing is cancelled.
    let refused = client
        .cancel_sweep(v1::CancelSweepRequest {
            sweep_id: "grid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains(&first) && refused.message().contains(&latest),
        "{}",
        refused.message()
    );
    for id in [&first, &latest] {
        assert_eq!(sweep_status(&mut client, id).await.cancelled, 0);
    }
    let cancelled = client
        .cancel_sweep(v1::CancelSweepRequest {
            sweep_id: unique_prefix.into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Its fine-tune; the source model is shared with the other sweep, which still wants it.
    assert_eq!(
        (cancelled.sweep_id.as_str(), cancelled.cancelled),
        (first.as_str(), 1)
    );
    assert_eq!(sweep_status(&mut client, &latest).await.cancelled, 0);
    running.shutdown().await.unwrap();
}
