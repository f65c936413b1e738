//! CIFAR served by the coordinator, end to end: a coordinator that fetches generated archives in
//! the official format from an HTTP server on 127.0.0.1, and agents with no data of their own
//! that get it from the coordinator. Each archive is fetched once for the whole cluster, the
//! results equal a direct run on the original data, and a coordinator that cannot fetch or
//! does not fetch fails the jobs with the reason.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{Cluster, comparable, ndhtl_tune, small_source, synth};
use common::http::{cifar_archive, serve};
use md5::{Digest, Md5};
use ndhtl_agent::data::DatasetKind;
use ndhtl_agent::data::download::{ArchiveSpec, FetchOptions};
use ndhtl_coordinator::datasets::FetchPolicy;
use ndhtl_coordinator::datasets::fetcher::DatasetSource;
use ndhtl_coordinator::domain::{JobState, Resources};
use ndhtl_coordinator::jobs::finetune_job;
use ndhtl_coordinator::store::ArtifactStore;

/// Both archives of the generated data under `data`, under their official names.
fn archives(data: &Path) -> Vec<(String, Vec<u8>)> {
    DatasetKind::ALL
        .into_iter()
        .map(|dataset| {
            (
                ArchiveSpec::official(dataset, "").file_name,
                cifar_archive(data, dataset),
            )
        })
        .collect()
}

/// The coordinator's source: `files` at `<base>/<mode>/<name>`, with their own sizes and md5s.
fn source(base: &str, mode: &str, files: &[(String, Vec<u8>)], state: &Path) -> DatasetSource {
    let archives = DatasetKind::ALL
        .into_iter()
        .zip(files)
        .map(|(dataset, (name, bytes))| {
            let spec = ArchiveSpec {
                dataset,
                file_name: name.clone(),
                url: format!("{base}/{mode}/{name}"),
                size: bytes.len() as u64,
                md5: hex::encode(Md5::digest(bytes)),
            };
            (dataset, spec)
        })
        .collect();
    let mut fetch = FetchOptions::new(state.to_path_buf());
    fetch.attempts = 2;
    fetch.retry_delay = Duration::from_millis(10);
    fetch.timeout = Duration::from_secs(5);
    DatasetSource {
        policy: FetchPolicy::OnDemand,
        archives,
        fetch,
        artifacts: ArtifactStore::open(&state.join("artifacts")).unwrap(),
        retry_after: Duration::from_millis(200),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_without_data_get_cifar_from_the_coordinator_which_fetches_each_archive_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let files = archives(&data);
    let server = serve(files.clone(), 50);
    let state = dir.path().join("state");
    let mut cluster =
        Cluster::start_serving(&state, Some(source(&server.base, "good", &files, &state))).await;
    let nowhere = dir.path().join("no-data");
    cluster.add_agent(&nowhere, &dir.path().join("agent-0"));
    cluster.add_agent(&nowhere, &dir.path().join("agent-1"));

    let source_job = small_source(1);
    let tune = ndhtl_tune(2);
    let stl = ndhtl_agent::train::FinetuneConfig {
        method: ndhtl_agent::train::Method::Stl,
        ..tune.clone()
    };
    let jobs = vec![
        source_job.clone(),
        finetune_job(&tune, &source_job, Resources::ANY),
        finetune_job(&stl, &source_job, Resources::ANY),
    ];
    cluster.submit("served", jobs.clone()).await;
    cluster.wait_done("served", Duration::from_secs(240)).await;
    for job in &jobs {
        let state = cluster.job(&job.id).await.state;
        assert!(
            matches!(state, JobState::Succeeded { .. }),
            "{}: {state:?}",
            job.id
        );
    }

    // Two agents, three jobs, two datasets: one fetch of each archive from upstream.
    for (name, _) in &files {
        assert_eq!(server.requests_for(name), 1, "{name} fetched once");
    }
    // The served data is the data: a direct run on the original folder gives the same numbers.
    let stored = cluster.stored_metrics(&jobs[1].id).await;
    let reference = cluster
        .reference_run(&source_job.id, &tune, &data, dir.path())
        .await;
    assert_eq!(comparable(&stored), comparable(&reference));

    let views = cluster.handle().datasets().await.unwrap();
    assert_eq!(views.len(), 2, "{views:?}");
    for (view, (_, bytes)) in views.iter().zip(&files) {
        assert_eq!(view.state, "ready", "{view:?}");
        assert_eq!(view.bytes, bytes.len() as u64);
        assert!(view.detail.ends_with(".tar.gz"), "the origin URL: {view:?}");
    }
    cluster.stop_agents().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_that_cannot_fetch_fails_the_jobs_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let files = archives(&data);
    // Every retry of the coordinator's fetch is a request: a large budget.
    let server = serve(files.clone(), 10_000);
    let state = dir.path().join("state");
    // `missing/` answers 404: a wrong mirror.
    let mut cluster = Cluster::start_serving(
        &state,
        Some(source(&server.base, "missing", &files, &state)),
    )
    .await;
    cluster.add_agent(&dir.path().join("no-data"), &dir.path().join("agent"));
    let source_job = small_source(1);
    cluster.submit("broken", vec![source_job.clone()]).await;
    cluster.wait_done("broken", Duration::from_secs(120)).await;
    match cluster.job(&source_job.id).await.state {
        JobState::Failed { attempt, reason } => {
            assert_eq!(
                attempt, 3,
                "retried as a transient failure, up to max_attempts"
            );
            assert!(reason.contains("HTTP status 404"), "{reason}");
            assert!(reason.contains("cifar10"), "{reason}");
        }
        other => panic!("expected a failed job, got {other:?}"),
    }
    let views = cluster.handle().datasets().await.unwrap();
    assert_eq!(views[0].state, "failed", "{views:?}");
    assert!(server.requests_for("cifar-10-binary.tar.gz") >= 1);
    cluster.stop_agents().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_fetching_an_agent_without_data_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    cluster.add_agent(&dir.path().join("no-data"), &dir.path().join("agent"));
    let source_job = small_source(1);
    cluster.submit("off", vec![source_job.clone()]).await;
    cluster.wait_done("off", Duration::from_secs(60)).await;
    match cluster.job(&source_job.id).await.state {
        JobState::Failed { reason, .. } => {
            assert!(reason.contains("does not serve cifar10"), "{reason}");
            assert!(reason.contains("--data"), "{reason}");
        }
        other => panic!("expected a failed job, got {other:?}"),
    }
    cluster.stop_agents().await;
}
