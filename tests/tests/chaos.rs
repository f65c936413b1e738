//! Faults with real processes (issue: the coordinator and its agents). Each test runs the same
//! small sweep, injects one fault at a chosen point of the fine-tune's progress, and ends by
//! comparing the final results with a fault-free run of the sweep: every lifetime present
//! exactly once, with the same numbers.

use std::time::Duration;

use ndhtl_proto::v1;
use ndhtl_system_tests::{Cluster, all_succeeded, outcome};
use tokio::sync::{Mutex, OnceCell};

/// One source job and one NDHTL fine-tune of four lifetimes on generated data (each agent
/// makes it), small enough to take seconds per lifetime on one thread.
const SWEEP: &str = "\
name: chaos
data:
  synthetic: {seed: 3, cifar10_train_per_class: 20, cifar10_test_per_class: 10, cifar100_train_per_class: 30, cifar100_test_per_class: 10}
source: {epochs: 1, lr: 0.02, batch_size: 32, eval_batch_size: 200}
finetune: {target: T1, method: ndhtl, seed: 0, lifetimes: 4, lr: 1.0e-3, k: 5, eval_batch_size: 200}
";

const LIFETIMES: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(300);

/// The tests share two cores: one at a time keeps their fault timing meaningful.
static SERIAL: Mutex<()> = Mutex::const_new(());
static BASELINE: OnceCell<Vec<(String, String, Vec<ndhtl_system_tests::Comparable>)>> =
    OnceCell::const_new();

async fn baseline() -> &'static Vec<(String, String, Vec<ndhtl_system_tests::Comparable>)> {
    BASELINE
        .get_or_init(|| async {
            let mut cluster = Cluster::start();
            cluster.add_agent(&[]);
            let sweep = cluster.submit(SWEEP).await;
            let results = cluster
                .wait_for(&sweep, "the fault-free run", TIMEOUT, all_succeeded)
                .await;
            outcome(&results)
        })
        .await
}

fn finetune(results: &[v1::JobResult]) -> &v1::JobResult {
    results
        .iter()
        .find(|job| job.kind == "finetune")
        .expect("a fine-tune job")
}

/// The fine-tune is running and has reported (and checkpointed) at least one lifetime.
fn finetune_midway(results: &[v1::JobResult]) -> bool {
    let job = finetune(results);
    job.state == "running" && !job.metrics_json.is_empty() && job.metrics_json.len() < LIFETIMES
}

async fn assert_matches_fault_free(cluster: &Cluster, results: &[v1::JobResult]) {
    let expected = baseline().await;
    let actual = outcome(results);
    for (_, state, history) in &actual {
        assert_eq!(state, "succeeded");
        let lifetimes: Vec<usize> = history.iter().map(|c| c.lifetime).collect();
        assert!(
            lifetimes.windows(2).all(|w| w[1] == w[0] + 1) && lifetimes[0] == 1,
            "every lifetime exactly once, in order: {lifetimes:?}\n{}",
            cluster.logs()
        );
    }
    assert_eq!(
        &actual,
        expected,
        "results differ from the fault-free run\n{}",
        cluster.logs()
    );
    assert_eq!(finetune(results).metrics_json.len(), LIFETIMES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_job_is_replaced_and_the_job_resumes_from_its_checkpoint() {
    let _serial = SERIAL.lock().await;
    baseline().await;
    let mut cluster = Cluster::start();
    let first = cluster.add_agent(&[]);
    let sweep = cluster.submit(SWEEP).await;
    cluster
        .wait_for(&sweep, "the fine-tune midway", TIMEOUT, finetune_midway)
        .await;
    cluster.kill_agent(first);
    let second = cluster.add_agent(&[]);
    let results = cluster
        .wait_for(
            &sweep,
            "completion on the second agent",
            TIMEOUT,
            all_succeeded,
        )
        .await;
    assert_eq!(
        finetune(&results).attempt,
        2,
        "re-leased once, as attempt 2"
    );
    assert!(
        cluster
            .agent(second)
            .log_text()
            .contains("resuming from the uploaded checkpoint"),
        "the second agent resumed from the checkpoint\n{}",
        cluster.logs()
    );
    assert_matches_fault_free(&cluster, &results).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_and_restarted_completes_the_sweep_with_every_result_once() {
    let _serial = SERIAL.lock().await;
    baseline().await;
    let mut cluster = Cluster::start();
    cluster.add_agent(&[]);
    let sweep = cluster.submit(SWEEP).await;
    cluster
        .wait_for(&sweep, "the fine-tune midway", TIMEOUT, finetune_midway)
        .await;
    cluster.kill_coordinator();
    // Down for longer than a heartbeat: the agent's calls fail and are retried with backoff.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_coordinator();
    let results = cluster
        .wait_for(
            &sweep,
            "completion after the restart",
            TIMEOUT,
            all_succeeded,
        )
        .await;
    assert_matches_fault_free(&cluster, &results).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_loses_its_lease_and_the_new_attempt_is_the_result() {
    let _serial = SERIAL.lock().await;
    baseline().await;
    let mut cluster = Cluster::start();
    let stalled = cluster.add_agent(&[]);
    let sweep = cluster.submit(SWEEP).await;
    let before = cluster
        .wait_for(&sweep, "the fine-tune midway", TIMEOUT, finetune_midway)
        .await;
    let reported_before_stall = finetune(&before).metrics_json.len();
    cluster.agent(stalled).pause();
    let _replacement = cluster.add_agent(&[]);
    // Past the lease: the job goes to the other agent as attempt 2.
    cluster
        .wait_for(&sweep, "attempt 2 leased", TIMEOUT, |results| {
            finetune(results).attempt >= 2
        })
        .await;
    // The stalled agent wakes up and carries on with its stale attempt; the coordinator
    // refuses whatever it says about it.
    cluster.agent(stalled).resume();
    let results = cluster
        .wait_for(&sweep, "completion by attempt 2", TIMEOUT, all_succeeded)
        .await;
    assert_eq!(finetune(&results).attempt, 2);
    assert!(reported_before_stall >= 1);
    assert_matches_fault_free(&cluster, &results).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_sent_twice_is_stored_once() {
    let _serial = SERIAL.lock().await;
    baseline().await;
    let mut cluster = Cluster::start();
    cluster.add_agent(&[("NDHTL_CHAOS_DUPLICATE_REPORTS", "true")]);
    let sweep = cluster.submit(SWEEP).await;
    let results = cluster
        .wait_for(&sweep, "completion", TIMEOUT, all_succeeded)
        .await;
    assert_eq!(finetune(&results).attempt, 1);
    assert_matches_fault_free(&cluster, &results).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sent_sigterm_finishes_its_job_then_exits() {
    let _serial = SERIAL.lock().await;
    baseline().await;
    let mut cluster = Cluster::start();
    let agent = cluster.add_agent(&[]);
    let sweep = cluster.submit(SWEEP).await;
    cluster
        .wait_for(&sweep, "the fine-tune midway", TIMEOUT, finetune_midway)
        .await;
    cluster.agent(agent).terminate();
    let status = tokio::task::block_in_place(|| cluster.agent_mut(agent).wait_exit(TIMEOUT));
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent exits cleanly after draining: {status:?}\n{}",
        cluster.logs()
    );
    let results = cluster.results(&sweep).await;
    assert!(all_succeeded(&results), "{results:#?}\n{}", cluster.logs());
    assert_eq!(
        finetune(&results).attempt,
        1,
        "finished by the same attempt"
    );
    assert_matches_fault_free(&cluster, &results).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_port_is_taken_says_so_and_a_new_cluster_serves() {
    let _serial = SERIAL.lock().await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let taken = holder.local_addr().expect("its address").port();
    let blocked = Cluster::start_on(taken, ndhtl_system_tests::free_port());
    assert!(
        blocked.coordinator_could_not_listen(),
        "the coordinator's log names the listen failure (Cluster::start retries on it)\n{}",
        blocked.logs()
    );
    drop(holder);
    let cluster = Cluster::start();
    assert!(
        !cluster.coordinator_could_not_listen(),
        "{}",
        cluster.logs()
    );
    let mut client = cluster.client().await;
    let status = client
        .get_status(v1::GetStatusRequest::default())
        .await
        .expect("the coordinator answers")
        .into_inner();
    assert!(status.sweeps.is_empty(), "a fresh coordinator: {status:?}");
}
