//! A coordinator and agents in one process over real gRPC on 127.0.0.1, running real NDHTL jobs
//! on generated data: a source job and the fine-tunes that depend on it. The stored results must
//! equal a direct run from the same source model, also when an agent is lost mid-job and the job
//! resumes elsewhere from its uploaded checkpoint, and when the coordinator restarts mid-job.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Cluster, comparable, ndhtl_tune, small_source, synth};
use ndhtl_agent::device::BackendKind;
use ndhtl_agent::runtime::runner::{
    JobInput, JobOutput, JobRunner, LifetimeEvent, NdhtlRunner, RunnerError,
};
use ndhtl_agent::train::{CancelToken, FinetuneConfig, Method};
use ndhtl_coordinator::domain::{JobState, Resources};
use ndhtl_coordinator::jobs::finetune_job;
use ndhtl_coordinator::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_and_two_fine_tunes_run_across_two_agents() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    let source = small_source(2);
    let stl = FinetuneConfig {
        method: Method::Stl,
        lifetimes: 2,
        lr: 1e-3,
        ..FinetuneConfig::default()
    };
    let ndhtl = FinetuneConfig {
        method: Method::Ndhtl,
        ..stl.clone()
    };
    let jobs = vec![
        finetune_job(&stl, &source, Resources::ANY),
        finetune_job(&ndhtl, &source, Resources::ANY),
        source.clone(),
    ];
    assert_eq!(cluster.submit("s", jobs.clone()).await.jobs, 3);
    cluster.add_agent(&data, &dir.path().join("agent-0"));
    cluster.add_agent(&data, &dir.path().join("agent-1"));
    cluster.wait_done("s", Duration::from_secs(240)).await;
    let counts = cluster.handle().counts("s".into()).await.unwrap();
    assert_eq!(counts.succeeded, 3, "{counts:?}");

    cluster.source_output(&source.id).await;
    assert_eq!(
        cluster.stored_metrics(&source.id).await.len(),
        2,
        "one record per source epoch"
    );
    for (job, config) in [(&jobs[0], &stl), (&jobs[1], &ndhtl)] {
        let stored = cluster.stored_metrics(&job.id).await;
        let reference = cluster
            .reference_run(&source.id, config, &data, dir.path())
            .await;
        assert_eq!(
            comparable(&stored),
            comparable(&reference),
            "{:?}: the cluster's results equal a direct run",
            config.method
        );
    }
    // The same sweep submitted again reuses every result.
    let again = cluster.submit("s2", jobs).await;
    assert_eq!((again.jobs, again.reused), (3, 3));
    cluster.stop_agents().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_lost_with_its_agent_resumes_elsewhere_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    let source = small_source(1);
    cluster.submit("src", vec![source.clone()]).await;
    cluster.add_agent(&data, &dir.path().join("agent-0"));
    cluster.wait_done("src", Duration::from_secs(120)).await;

    let config = ndhtl_tune(4);
    let tune = finetune_job(&config, &source, Resources::ANY);
    cluster.submit("s", vec![tune.clone()]).await;
    // Wait for two lifetimes, then lose the agent that runs the job.
    cluster.wait_lifetimes(&tune.id, 2).await;
    cluster.stop_agent(0).await;
    cluster.handle().lose_agent("agent-0".into()).await.unwrap();
    cluster.add_agent(&data, &dir.path().join("agent-1"));
    cluster.wait_done("s", Duration::from_secs(240)).await;

    let state = cluster.job(&tune.id).await.state;
    assert!(
        matches!(state, JobState::Succeeded { attempt: 2, .. }),
        "{state:?}"
    );
    let stored = cluster.stored_metrics(&tune.id).await;
    assert_eq!(stored.len(), 4, "every lifetime exactly once");
    let reference = cluster
        .reference_run(&source.id, &config, &data, dir.path())
        .await;
    assert_eq!(
        comparable(&stored),
        comparable(&reference),
        "a resumed job ends where an uninterrupted one does"
    );
    cluster.stop_agents().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_rides_out_a_coordinator_restart_and_its_job_finishes_on_the_same_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    let source = small_source(1);
    let config = ndhtl_tune(8);
    let tune = finetune_job(&config, &source, Resources::ANY);
    cluster
        .submit("s", vec![source.clone(), tune.clone()])
        .await;
    cluster.add_agent(&data, &dir.path().join("agent"));

    // Let the fine-tune record a lifetime, then take the coordinator down mid-job.
    cluster.wait_lifetimes(&tune.id, 1).await;
    let tune_id = tune.id.clone();
    cluster
        .restart_coordinator(|state_dir| {
            // What the coordinator persisted: the job was still running when it went down.
            let snapshot = Store::open(state_dir).unwrap().load().unwrap();
            let job = snapshot.jobs.iter().find(|j| j.spec.id == tune_id).unwrap();
            assert!(
                matches!(job.state, JobState::Leased(_)) && job.completed_lifetimes < 8,
                "the outage must fall in the middle of the job: {job:?}"
            );
            // The agent keeps training and retrying meanwhile.
            std::thread::sleep(Duration::from_millis(800));
        })
        .await;
    cluster.wait_done("s", Duration::from_secs(240)).await;

    let finished = cluster.job(&tune.id).await.state;
    assert!(
        matches!(finished, JobState::Succeeded { attempt: 1, .. }),
        "kept its lease through the restart: {finished:?}"
    );
    let stored = cluster.stored_metrics(&tune.id).await;
    assert_eq!(stored.len(), 8, "every lifetime exactly once");
    let reference = cluster
        .reference_run(&source.id, &config, &data, dir.path())
        .await;
    assert_eq!(comparable(&stored), comparable(&reference));
    cluster.stop_agents().await;
}

/// A runner whose fine-tunes of seed 666 die the way libtorch does when CUDA runs out of memory
/// (tch panics on a C++ exception); every other job runs normally.
struct OutOfMemoryOnSeed666(NdhtlRunner);

impl JobRunner for OutOfMemoryOnSeed666 {
    fn run(
        &self,
        input: &JobInput,
        on_lifetime: &mut dyn FnMut(LifetimeEvent),
        cancel: &CancelToken,
    ) -> Result<JobOutput, RunnerError> {
        if input.config_json.contains("\"seed\":666") {
            panic!(
                "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)\")"
            );
        }
        self.0.run(input, on_lifetime, cancel)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_runs_out_of_gpu_memory_fails_with_its_error_and_the_agent_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synth(&data);
    let mut cluster = Cluster::start(&dir.path().join("state")).await;
    let source = small_source(1);
    let doomed = FinetuneConfig {
        seed: 666,
        ..ndhtl_tune(1)
    };
    let fine = ndhtl_tune(1);
    // Priority order within the sweep is submission order: the doomed job leases first.
    let jobs = vec![
        source.clone(),
        finetune_job(&doomed, &source, Resources::ANY),
        finetune_job(&fine, &source, Resources::ANY),
    ];
    cluster.submit("oom", jobs.clone()).await;
    let work = dir.path().join("agent-0");
    let runner = Arc::new(OutOfMemoryOnSeed666(NdhtlRunner {
        data_dir: data.clone(),
        generated_data_dir: work.join("data"),
        backend: Some(BackendKind::Flex),
    }));
    cluster.add_agent_with(&data, &work, runner);
    cluster.wait_done("oom", Duration::from_secs(240)).await;

    match cluster.job(&jobs[1].id).await.state {
        JobState::Failed { attempt, reason } => {
            assert_eq!(attempt, 1, "a panic is not retried");
            assert!(
                reason.contains("CUDA out of memory"),
                "the error is kept: {reason}"
            );
        }
        other => panic!("the doomed job should have failed, not {other:?}"),
    }
    assert!(
        matches!(
            cluster.job(&jobs[2].id).await.state,
            JobState::Succeeded { .. }
        ),
        "the same agent ran the next job: its slot was freed"
    );
    let agents = cluster
        .handle()
        .inspect(|state, _| state.agents().filter(|a| !a.lost).count())
        .await
        .unwrap();
    assert_eq!(agents, 1, "the agent stayed up and registered");
    cluster.stop_agents().await;
}
