//! The agent protocol over real gRPC on 127.0.0.1, with a fake agent: leases, idempotent metric
//! streams, artifacts, stale attempts, precise statuses for bad requests, datasets only for
//! registered agents, and a restart of the coordinator from its state database.

mod common;

use std::time::Duration;

use common::{channel, spec, start};
use ndhtl_coordinator::state::Timing;
use ndhtl_proto::v1;
use ndhtl_proto::v1::agent_service_client::AgentServiceClient;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::Channel;

const TIMING: Timing = Timing {
    lease_timeout_ms: 400,
    heartbeat_interval_ms: 50,
    agent_timeout_ms: 60_000,
    max_attempts: 3,
};

fn capabilities(version: &str) -> v1::AgentCapabilities {
    v1::AgentCapabilities {
        backend: "flex".into(),
        devices: vec![v1::Device {
            kind: "cpu".into(),
            index: 0,
            name: "cpu".into(),
            memory_bytes: 0,
        }],
        slots: 2,
        version: version.into(),
        hostname: "test".into(),
        ..Default::default()
    }
}

async fn register(client: &mut AgentServiceClient<Channel>) -> String {
    let request = v1::RegisterRequest {
        capabilities: Some(capabilities(ndhtl_coordinator::VERSION)),
        ..Default::default()
    };
    client
        .register(request)
        .await
        .unwrap()
        .into_inner()
        .agent_id
}

fn attempt(job: &str, attempt: u32) -> Option<v1::JobAttempt> {
    Some(v1::JobAttempt {
        job_id: job.into(),
        attempt,
    })
}

fn report(
    agent: &str,
    job: &str,
    attempt_number: u32,
    lifetime: u32,
    checkpoint: &str,
) -> v1::MetricsReport {
    v1::MetricsReport {
        agent_id: agent.into(),
        job: attempt(job, attempt_number),
        lifetime,
        metrics_json: format!(r#"{{"lifetime":{lifetime}}}"#),
        checkpoint_artifact: checkpoint.into(),
    }
}

async fn upload(client: &mut AgentServiceClient<Channel>, bytes: &[u8]) -> String {
    let hash = hex::encode(Sha256::digest(bytes));
    let chunks: Vec<v1::ArtifactChunk> = bytes
        .chunks(7)
        .enumerate()
        .map(|(i, data)| v1::ArtifactChunk {
            sha256: hash.clone(),
            total_bytes: bytes.len() as u64,
            offset: (i * 7) as u64,
            data: data.to_vec(),
        })
        .collect();
    client
        .upload_artifact(tokio_stream::iter(chunks))
        .await
        .unwrap();
    hash
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_leased_reported_once_and_completed_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), TIMING).await;
    running
        .handle()
        .submit("s".into(), "sweep".into(), 0, vec![spec("a")])
        .await
        .unwrap();
    let mut client = AgentServiceClient::new(channel(&running).await);
    let agent = register(&mut client).await;

    let lease = client
        .lease_job(v1::LeaseJobRequest {
            agent_id: agent.clone(),
            slot: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    assert_eq!(lease.job, attempt("a", 1));
    assert_eq!(
        (
            lease.kind.as_str(),
            lease.device.as_str(),
            lease.config_json.as_str()
        ),
        ("finetune", "cpu", r#"{"task":"T1"}"#)
    );

    let checkpoint = upload(&mut client, b"checkpoint after lifetime 1").await;
    // A stream with a duplicate (a retried send) is stored once.
    let reports = vec![
        report(&agent, "a", 1, 1, &checkpoint),
        report(&agent, "a", 1, 1, &checkpoint),
        report(&agent, "a", 1, 2, ""),
    ];
    let response = client
        .report_metrics(tokio_stream::iter(reports))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.stored, response.duplicates), (2, 1));

    // The checkpoint downloads back byte for byte.
    let mut stream = client
        .download_artifact(v1::DownloadArtifactRequest {
            sha256: checkpoint.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut downloaded = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        assert_eq!(chunk.offset as usize, downloaded.len());
        downloaded.extend(chunk.data);
    }
    assert_eq!(downloaded, b"checkpoint after lifetime 1");

    client
        .complete_job(v1::CompleteJobRequest {
            agent_id: agent.clone(),
            job: attempt("a", 1),
            summary_json: "{}".into(),
            output_artifact: String::new(),
        })
        .await
        .unwrap();
    let counts = running.handle().counts("s".into()).await.unwrap();
    assert_eq!((counts.succeeded, counts.total()), (1, 1));
    let stored = running
        .handle()
        .inspect(|_, store| store.metrics_of("a").unwrap().len())
        .await
        .unwrap();
    assert_eq!(stored, 2);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses_and_the_coordinator_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), TIMING).await;
    running
        .handle()
        .submit("s".into(), "sweep".into(), 0, vec![spec("a"), spec("b")])
        .await
        .unwrap();
    let mut client = AgentServiceClient::new(channel(&running).await);
    let agent = register(&mut client).await;
    client
        .lease_job(v1::LeaseJobRequest {
            agent_id: agent.clone(),
            slot: 0,
        })
        .await
        .unwrap();

    let code = |result: Result<tonic::Response<_>, tonic::Status>| -> Code {
        result.map(|_: tonic::Response<()>| ()).unwrap_err().code()
    };
    let unit = |r: Result<tonic::Response<v1::HeartbeatResponse>, tonic::Status>| {
        r.map(|_| tonic::Response::new(()))
    };
    assert_eq!(
        code(unit(
            client
                .heartbeat(v1::HeartbeatRequest {
                    agent_id: "agent-77".into(),
                    ..Default::default()
                })
                .await
        )),
        Code::NotFound
    );
    let lease = client
        .lease_job(v1::LeaseJobRequest {
            agent_id: agent.clone(),
            slot: 9,
        })
        .await;
    assert_eq!(
        lease.unwrap_err().code(),
        Code::InvalidArgument,
        "no such slot"
    );
    let wrong_attempt = client
        .complete_job(v1::CompleteJobRequest {
            agent_id: agent.clone(),
            job: attempt("a", 2),
            ..Default::default()
        })
        .await;
    assert_eq!(
        wrong_attempt.unwrap_err().code(),
        Code::FailedPrecondition,
        "wrong attempt"
    );
    let unknown_job = client
        .fail_job(v1::FailJobRequest {
            agent_id: agent.clone(),
            job: attempt("zzz", 1),
            ..Default::default()
        })
        .await;
    assert_eq!(unknown_job.unwrap_err().code(), Code::NotFound);
    let old_version = v1::RegisterRequest {
        capabilities: Some(capabilities("9.9.0")),
        ..Default::default()
    };
    assert_eq!(
        client.register(old_version).await.unwrap_err().code(),
        Code::FailedPrecondition,
        "version mismatch"
    );
    let bad_chunk = v1::ArtifactChunk {
        sha256: "0".repeat(64),
        total_bytes: 3,
        offset: 0,
        data: b"abc".to_vec(),
    };
    let upload = client
        .upload_artifact(tokio_stream::iter(vec![bad_chunk]))
        .await;
    assert_eq!(
        upload.unwrap_err().code(),
        Code::InvalidArgument,
        "hash mismatch"
    );
    let download = client
        .download_artifact(v1::DownloadArtifactRequest {
            sha256: "../../etc/passwd".into(),
        })
        .await;
    assert_eq!(
        download.err().unwrap().code(),
        Code::InvalidArgument,
        "malformed hash"
    );
    let download = client
        .download_artifact(v1::DownloadArtifactRequest {
            sha256: "1".repeat(64),
        })
        .await;
    assert_eq!(download.err().unwrap().code(), Code::NotFound);
    let not_json = vec![v1::MetricsReport {
        metrics_json: "{oops".into(),
        ..report(&agent, "a", 1, 1, "")
    }];
    assert_eq!(
        client
            .report_metrics(tokio_stream::iter(not_json))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let missing = vec![report(&agent, "a", 1, 1, &"2".repeat(64))];
    assert_eq!(
        client
            .report_metrics(tokio_stream::iter(missing))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition,
        "checkpoint not uploaded"
    );

    // Still serving: health says so and the next lease works.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&running).await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "ndhtl.v1.AgentService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let lease = client
        .lease_job(v1::LeaseJobRequest {
            agent_id: agent,
            slot: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    assert_eq!(lease.job, attempt("b", 1));
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_are_answered_only_for_registered_agents() {
    // This coordinator serves no datasets, so a registered agent is told so (FailedPrecondition);
    // an agent it does not know, or has given up on, is told that first (NotFound), which is
    // what sends a real agent back to register.
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), TIMING).await;
    let mut client = AgentServiceClient::new(channel(&running).await);
    let ask = |agent: &str| v1::GetDatasetRequest {
        agent_id: agent.into(),
        dataset: "cifar100".into(),
    };
    let code_for = |result: Result<tonic::Response<v1::GetDatasetResponse>, tonic::Status>| {
        result.unwrap_err().code()
    };

    assert_eq!(
        code_for(client.get_dataset(ask("agent-77")).await),
        Code::NotFound,
        "never registered"
    );
    assert_eq!(
        code_for(client.get_dataset(ask("")).await),
        Code::InvalidArgument,
        "no agent id"
    );
    let agent = register(&mut client).await;
    assert_eq!(
        code_for(client.get_dataset(ask(&agent)).await),
        Code::FailedPrecondition,
        "registered, but nothing is served"
    );
    let unknown_dataset = v1::GetDatasetRequest {
        dataset: "imagenet".into(),
        ..ask(&agent)
    };
    assert_eq!(
        code_for(client.get_dataset(unknown_dataset).await),
        Code::InvalidArgument
    );
    running.handle().lose_agent(agent.clone()).await.unwrap();
    assert_eq!(
        code_for(client.get_dataset(ask(&agent)).await),
        Code::NotFound,
        "given up on"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_loses_its_lease_and_its_late_reports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), TIMING).await;
    running
        .handle()
        .submit("s".into(), "sweep".into(), 0, vec![spec("a")])
        .await
        .unwrap();
    let mut client = AgentServiceClient::new(channel(&running).await);
    let stalled = register(&mut client).await;
    let healthy = register(&mut client).await;
    client
        .lease_job(v1::LeaseJobRequest {
            agent_id: stalled.clone(),
            slot: 0,
        })
        .await
        .unwrap();

    // No heartbeats from the stalled agent: after the lease timeout the job goes back.
    let mut second = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lease = client
            .lease_job(v1::LeaseJobRequest {
                agent_id: healthy.clone(),
                slot: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .lease;
        if lease.is_some() {
            second = lease;
            break;
        }
    }
    assert_eq!(
        second.expect("re-leased after the timeout").job,
        attempt("a", 2)
    );

    let late = client
        .report_metrics(tokio_stream::iter(vec![report(&stalled, "a", 1, 1, "")]))
        .await;
    assert_eq!(
        late.unwrap_err().code(),
        Code::FailedPrecondition,
        "the stale attempt is refused"
    );
    let cancel = client
        .heartbeat(v1::HeartbeatRequest {
            agent_id: stalled.clone(),
            running: vec![attempt("a", 1).unwrap()],
            free_slots: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .cancel;
    assert_eq!(cancel, vec![attempt("a", 1).unwrap()], "told to stop");
    let response = client
        .report_metrics(tokio_stream::iter(vec![report(&healthy, "a", 2, 1, "")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.stored, 1);
    client
        .complete_job(v1::CompleteJobRequest {
            agent_id: healthy,
            job: attempt("a", 2),
            ..Default::default()
        })
        .await
        .unwrap();
    let summary = running
        .handle()
        .inspect(|_, store| store.summary_of("a").unwrap())
        .await
        .unwrap();
    assert_eq!(
        summary.map(|(attempt, _)| attempt),
        Some(2),
        "the result is the new attempt's"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_keeps_leases_of_agents_that_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), TIMING).await;
    running
        .handle()
        .submit("s".into(), "sweep".into(), 0, vec![spec("a"), spec("b")])
        .await
        .unwrap();
    let mut client = AgentServiceClient::new(channel(&running).await);
    let agent = register(&mut client).await;
    client
        .lease_job(v1::LeaseJobRequest {
            agent_id: agent.clone(),
            slot: 0,
        })
        .await
        .unwrap();
    client
        .report_metrics(tokio_stream::iter(vec![report(&agent, "a", 1, 1, "")]))
        .await
        .unwrap();
    running.shutdown().await.unwrap();

    let running = start(dir.path(), TIMING).await;
    let mut client = AgentServiceClient::new(channel(&running).await);
    let request = v1::RegisterRequest {
        capabilities: Some(capabilities(ndhtl_coordinator::VERSION)),
        previous_agent_id: agent.clone(),
        running: vec![attempt("a", 1).unwrap()],
    };
    let registered = client.register(request).await.unwrap().into_inner();
    assert_eq!(registered.agent_id, agent, "same identity");
    assert_eq!(
        registered.kept,
        vec![attempt("a", 1).unwrap()],
        "its running job stays leased to it"
    );
    let response = client
        .report_metrics(tokio_stream::iter(vec![
            report(&agent, "a", 1, 1, ""),
            report(&agent, "a", 1, 2, ""),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (response.stored, response.duplicates),
        (1, 1),
        "lifetime 1 survived the restart"
    );
    let counts = running.handle().counts("s".into()).await.unwrap();
    assert_eq!((counts.running, counts.queued), (1, 1));
    running.shutdown().await.unwrap();
}
