//! The state machine on a virtual clock, no network, no disk.

use std::collections::BTreeMap;

use super::*;
use crate::domain::{DeviceKind, JobKind, Resources};

const VERSION: &str = "0.1.0";

fn timing() -> Timing {
    Timing {
        lease_timeout_ms: 1_000,
        heartbeat_interval_ms: 100,
        agent_timeout_ms: 5_000,
        max_attempts: 3,
    }
}

fn spec(id: &str) -> JobSpec {
    JobSpec {
        id: id.into(),
        kind: JobKind::Finetune,
        config_json: format!("{{\"task\":\"{id}\"}}"),
        depends_on: None,
        resources: Resources::ANY,
    }
}

/// The source job `src`, which the fine-tunes of [`fine_tune_of_source`] wait for.
fn source_spec() -> JobSpec {
    JobSpec {
        kind: JobKind::Source,
        ..spec("src")
    }
}

fn fine_tune_of_source(id: &str) -> JobSpec {
    JobSpec {
        depends_on: Some("src".into()),
        ..spec(id)
    }
}

fn caps(backend: &str, devices: Vec<DeviceKind>, slots: u32) -> AgentCapabilities {
    AgentCapabilities {
        backend: backend.into(),
        devices,
        slots,
        version: VERSION.into(),
        hostname: "test".into(),
    }
}

/// Persisted rows, as the store would hold them after applying every change.
#[derive(Default)]
struct FakeStore {
    jobs: BTreeMap<JobId, Job>,
    sweeps: BTreeMap<SweepId, Sweep>,
    agents: BTreeMap<AgentId, Agent>,
    metrics: BTreeMap<(JobId, u32, u32), String>,
    summaries: BTreeMap<JobId, (u32, String)>,
}

impl FakeStore {
    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Job(job) => {
                    self.jobs.insert(job.spec.id.clone(), *job);
                }
                Change::Dataset(stored) => {
                    panic!("the job state machine stored a dataset: {stored:?}")
                }
                Change::Sweep(sweep) => {
                    self.sweeps.insert(sweep.id.clone(), sweep);
                }
                Change::Agent(agent) => {
                    self.agents.insert(agent.id.clone(), agent);
                }
                Change::Metrics(record) => {
                    let key = (record.job, record.attempt, record.lifetime);
                    assert!(
                        !self.metrics.contains_key(&key),
                        "a metrics record was emitted twice: {key:?}"
                    );
                    self.metrics.insert(key, record.metrics_json);
                }
                Change::Summary {
                    job,
                    attempt,
                    summary_json,
                } => {
                    self.summaries.insert(job, (attempt, summary_json));
                }
            }
        }
    }

    fn restore(&self, now_ms: u64) -> ClusterState {
        ClusterState::restore(
            timing(),
            self.jobs.values().cloned().collect(),
            self.sweeps.values().cloned().collect(),
            self.agents.values().cloned().collect(),
            now_ms,
        )
    }
}

/// A state with its store, applying every change as the event loop does.
struct Harness {
    state: ClusterState,
    store: FakeStore,
}

impl Harness {
    fn new() -> Self {
        Harness {
            state: ClusterState::new(timing()),
            store: FakeStore::default(),
        }
    }

    fn submit(&mut self, sweep: &str, priority: i32, specs: Vec<JobSpec>) -> Submitted {
        let (submitted, changes) = self
            .state
            .submit_sweep(sweep.into(), sweep.into(), priority, specs)
            .unwrap();
        self.store.apply(changes);
        submitted
    }

    fn register(&mut self, capabilities: AgentCapabilities, now: u64) -> AgentId {
        let (id, _, changes) = self
            .state
            .register_agent(capabilities, VERSION, None, &[], now)
            .unwrap();
        self.store.apply(changes);
        id
    }

    fn lease(&mut self, agent: &str, slot: u32, now: u64) -> Option<LeaseGrant> {
        let (grant, changes) = self.state.lease(agent, slot, now).unwrap();
        self.store.apply(changes);
        grant
    }

    fn report(&mut self, agent: &str, job: &str, attempt: u32, lifetime: u32) -> Result<bool> {
        let (new, changes) = self.state.report_metrics(
            agent,
            job,
            attempt,
            lifetime,
            format!("{{\"lifetime\":{lifetime},\"attempt\":{attempt}}}"),
            Some(format!("ckpt-{job}-{lifetime}")),
        )?;
        self.store.apply(changes);
        Ok(new)
    }

    fn complete(&mut self, agent: &str, job: &str, attempt: u32) -> Result<()> {
        let changes =
            self.state
                .complete(agent, job, attempt, "{}".into(), Some(format!("out-{job}")))?;
        self.store.apply(changes);
        Ok(())
    }

    /// Ends the attempt with an error; whether the job will be retried.
    fn fail(
        &mut self,
        agent: &str,
        job: &str,
        attempt: u32,
        reason: &str,
        retryable: bool,
    ) -> Result<bool> {
        let (retry, changes) = self
            .state
            .fail(agent, job, attempt, reason.into(), retryable)?;
        self.store.apply(changes);
        Ok(retry)
    }

    fn tick(&mut self, now: u64) {
        let changes = self.state.tick(now);
        self.store.apply(changes);
    }

    fn counts(&self, sweep: &str) -> SweepCounts {
        self.state.sweep_counts(sweep).unwrap()
    }
}

#[test]
fn a_job_runs_reports_and_completes() {
    let mut h = Harness::new();
    assert_eq!(
        h.submit("s", 0, vec![spec("a"), spec("b")]),
        Submitted { jobs: 2, reused: 0 }
    );
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 2), 0);
    let grant = h.lease(&agent, 0, 10).unwrap();
    assert_eq!(
        (
            grant.spec.id.as_str(),
            grant.attempt,
            grant.deadline_ms,
            grant.device.as_str()
        ),
        ("a", 1, 1_010, "cpu")
    );
    assert_eq!(grant.resume, None);
    assert!(h.report(&agent, "a", 1, 1).unwrap());
    assert!(h.report(&agent, "a", 1, 2).unwrap());
    h.complete(&agent, "a", 1).unwrap();
    assert_eq!(
        h.counts("s"),
        SweepCounts {
            queued: 1,
            succeeded: 1,
            ..Default::default()
        }
    );
    assert_eq!(h.store.metrics.len(), 2);
    // The slot is free again.
    assert_eq!(h.lease(&agent, 0, 20).unwrap().spec.id, "b");
    assert_eq!(h.lease(&agent, 1, 20), None, "nothing left");
}

#[test]
fn an_expired_lease_is_retried_as_the_next_attempt_and_stale_reports_are_refused() {
    let mut h = Harness::new();
    h.submit("s", 0, vec![spec("a")]);
    let slow = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    let fast = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    h.lease(&slow, 0, 0).unwrap();
    assert!(h.report(&slow, "a", 1, 1).unwrap());
    // Heartbeats keep the lease alive past the original deadline…
    let (cancel, _) = h.state.heartbeat(&slow, &[("a".into(), 1)], 900).unwrap();
    assert!(cancel.is_empty());
    h.tick(1_500);
    assert_eq!(h.counts("s").running, 1);
    // … until they stop: the lease expires and the job is queued again.
    h.tick(2_000);
    assert_eq!(h.counts("s").queued, 1);
    let grant = h.lease(&fast, 0, 2_000).unwrap();
    assert_eq!(grant.attempt, 2);
    assert_eq!(
        grant.resume,
        Some((1, "ckpt-a-1".to_string())),
        "resume from the last checkpoint"
    );
    assert_eq!(grant.completed_lifetimes, 1);

    // The stalled agent wakes up: its reports are refused, never merged.
    let error = h.report(&slow, "a", 1, 2).unwrap_err();
    assert!(
        matches!(error, CoordinatorError::StaleAttempt { attempt: 1, .. }),
        "{error}"
    );
    assert!(h.state.complete(&slow, "a", 1, "{}".into(), None).is_err());
    let (cancel, _) = h.state.heartbeat(&slow, &[("a".into(), 1)], 2_100).unwrap();
    assert_eq!(
        cancel,
        vec![("a".to_string(), 1)],
        "told to stop the stale attempt"
    );

    // The new attempt's records are the ones kept.
    assert!(
        !h.report(&fast, "a", 2, 1).unwrap(),
        "lifetime 1 is already stored"
    );
    assert!(h.report(&fast, "a", 2, 2).unwrap());
    h.complete(&fast, "a", 2).unwrap();
    assert_eq!(h.store.summaries["a"].0, 2);
    let keys: Vec<_> = h.store.metrics.keys().cloned().collect();
    assert_eq!(keys, vec![("a".to_string(), 1, 1), ("a".to_string(), 2, 2)]);
}

#[test]
fn a_late_report_of_an_old_attempt_is_refused_even_from_the_same_agent() {
    let mut h = Harness::new();
    h.submit("s", 0, vec![spec("a")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    assert_eq!(h.lease(&agent, 0, 0).unwrap().attempt, 1);
    h.state.heartbeat(&agent, &[], 500).unwrap();
    h.tick(1_500);
    assert_eq!(
        h.lease(&agent, 0, 1_500).unwrap().attempt,
        2,
        "the same agent gets the retry"
    );
    let error = h.report(&agent, "a", 1, 1).unwrap_err();
    assert!(
        matches!(error, CoordinatorError::StaleAttempt { attempt: 1, .. }),
        "{error}"
    );
    assert!(h.state.complete(&agent, "a", 1, "{}".into(), None).is_err());
    assert!(h.state.fail(&agent, "a", 1, "late".into(), true).is_err());
    assert!(h.report(&agent, "a", 2, 1).unwrap());
}

#[test]
fn a_job_fails_for_good_after_max_attempts_with_its_reason_kept() {
    let mut h = Harness::new();
    h.submit("s", 0, vec![spec("a")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    let mut now = 0;
    for attempt in 1..=3 {
        let grant = h.lease(&agent, 0, now).unwrap();
        assert_eq!(grant.attempt, attempt);
        h.state.heartbeat(&agent, &[], now).unwrap();
        now += 1_500;
        h.tick(now);
    }
    let job = h.state.job("a").unwrap();
    assert!(
        matches!(&job.state, JobState::Failed { attempt: 3, reason } if reason.contains("lease expired") && reason.contains("3 attempts")),
        "{:?}",
        job.state
    );
    assert_eq!(h.lease(&agent, 0, now), None);
}

#[test]
fn retryable_failures_retry_and_fatal_ones_do_not() {
    let mut h = Harness::new();
    h.submit("s", 0, vec![spec("a"), spec("b")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    h.lease(&agent, 0, 0).unwrap();
    let retry = h.fail(&agent, "a", 1, "disk full", true).unwrap();
    assert!(retry);
    let again = h.lease(&agent, 0, 1).unwrap();
    assert_eq!(
        (again.spec.id.as_str(), again.attempt),
        ("a", 2),
        "a retried job goes first"
    );
    let retry = h.fail(&agent, "a", 2, "invalid `k` = 0", false).unwrap();
    assert!(!retry);
    assert!(
        matches!(&h.state.job("a").unwrap().state, JobState::Failed { reason, .. } if reason == "invalid `k` = 0")
    );
}

#[test]
fn jobs_shared_by_sweeps_run_once_and_finished_results_are_reused() {
    let mut h = Harness::new();
    h.submit("first", 0, vec![spec("a"), spec("b")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    h.lease(&agent, 0, 0).unwrap();
    h.complete(&agent, "a", 1).unwrap();
    // The second sweep shares `a` (done) and `b` (queued), adds `c`, and lists `c` twice.
    let submitted = h.submit(
        "second",
        0,
        vec![spec("a"), spec("b"), spec("c"), spec("c")],
    );
    assert_eq!(submitted, Submitted { jobs: 3, reused: 1 });
    assert_eq!(h.state.jobs().count(), 3, "no duplicate jobs");
    let mut leased = Vec::new();
    while let Some(grant) = h.lease(&agent, 0, 1) {
        leased.push(grant.spec.id.clone());
        h.complete(&agent, &grant.spec.id, grant.attempt).unwrap();
    }
    leased.sort();
    assert_eq!(leased, vec!["b", "c"], "each job runs once");
    assert!(h.counts("first").is_done() && h.counts("second").is_done());
    assert_eq!(h.counts("second").succeeded, 3);
    assert!(matches!(
        h.state.submit_sweep("first".into(), "x".into(), 0, vec![]),
        Err(CoordinatorError::DuplicateSweep(_))
    ));
}

#[test]
fn a_fine_tune_waits_for_its_source_and_fails_with_it() {
    let mut h = Harness::new();
    let source = source_spec();
    let tune = fine_tune_of_source;
    h.submit("s", 0, vec![tune("t1"), source.clone(), tune("t2")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 2), 0);
    let first = h.lease(&agent, 0, 0).unwrap();
    assert_eq!(first.spec.id, "src", "fine-tunes wait for the source");
    assert_eq!(h.lease(&agent, 1, 0), None);
    h.complete(&agent, "src", 1).unwrap();
    let tuned = h.lease(&agent, 0, 1).unwrap();
    assert_eq!(tuned.spec.id, "t1");
    assert_eq!(
        tuned.source_artifact.as_deref(),
        Some("out-src"),
        "the source model travels with the lease"
    );

    let mut h = Harness::new();
    h.submit("s", 0, vec![source, tune("t1"), tune("t2")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    h.lease(&agent, 0, 0).unwrap();
    h.fail(&agent, "src", 1, "diverged", false).unwrap();
    assert_eq!(h.counts("s").failed, 3);
    assert!(
        matches!(&h.state.job("t2").unwrap().state, JobState::Failed { reason, .. } if reason.contains("source job `src` failed"))
    );
    assert!(
        h.state
            .submit_sweep(
                "bad".into(),
                "bad".into(),
                0,
                vec![JobSpec {
                    depends_on: Some("nope".into()),
                    ..spec("x")
                }]
            )
            .is_err()
    );
}

#[test]
fn jobs_go_only_to_agents_that_can_run_them_one_per_slot() {
    let mut h = Harness::new();
    let gpu_job = JobSpec {
        resources: Resources {
            backend: Some("tch".into()),
            device: Some(DeviceKind::Cuda),
        },
        ..spec("gpu")
    };
    h.submit("s", 0, vec![gpu_job, spec("any")]);
    let cpu = h.register(caps("flex", vec![DeviceKind::Cpu], 4), 0);
    let gpus = h.register(caps("tch", vec![DeviceKind::Cpu, DeviceKind::Cuda], 2), 0);
    assert_eq!(
        h.lease(&cpu, 0, 0).unwrap().spec.id,
        "any",
        "the CPU agent skips the GPU job"
    );
    assert_eq!(h.lease(&cpu, 1, 0), None);
    let grant = h.lease(&gpus, 1, 0).unwrap();
    assert_eq!(
        (grant.spec.id.as_str(), grant.device.as_str()),
        ("gpu", "cuda")
    );
    h.submit("more", 0, vec![spec("x")]);
    assert!(
        matches!(
            h.state.lease(&gpus, 1, 0),
            Err(CoordinatorError::SlotBusy { slot: 1, .. })
        ),
        "one job per slot"
    );
    assert!(matches!(
        h.state.lease(&gpus, 2, 0),
        Err(CoordinatorError::NoSuchSlot { slots: 2, .. })
    ));
    assert!(matches!(
        h.state.lease("agent-99", 0, 0),
        Err(CoordinatorError::UnknownAgent(_))
    ));
}

#[test]
fn sweeps_share_agents_fairly_and_priority_goes_first() {
    let mut h = Harness::new();
    h.submit("a", 0, (0..4).map(|i| spec(&format!("a{i}"))).collect());
    h.submit("b", 0, (0..4).map(|i| spec(&format!("b{i}"))).collect());
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 4), 0);
    let order: Vec<String> = (0..4)
        .map(|slot| h.lease(&agent, slot, 0).unwrap().spec.id)
        .collect();
    assert_eq!(
        order,
        vec!["a0", "b0", "a1", "b1"],
        "equal priority alternates"
    );

    let mut h = Harness::new();
    h.submit("low", 0, vec![spec("l0"), spec("l1")]);
    h.submit("high", 5, vec![spec("h0"), spec("h1")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 3), 0);
    let order: Vec<String> = (0..3)
        .map(|slot| h.lease(&agent, slot, 0).unwrap().spec.id)
        .collect();
    assert_eq!(order, vec!["h0", "h1", "l0"]);
}

#[test]
fn a_lost_agent_gives_its_jobs_back_at_once() {
    let mut h = Harness::new();
    h.submit("s", 0, vec![spec("a"), spec("b")]);
    let dead = h.register(caps("flex", vec![DeviceKind::Cpu], 2), 0);
    let alive = h.register(caps("flex", vec![DeviceKind::Cpu], 2), 0);
    h.lease(&dead, 0, 0).unwrap();
    h.lease(&dead, 1, 0).unwrap();
    let changes = h.state.lose_agent(&dead);
    h.store.apply(changes);
    assert_eq!(h.counts("s").queued, 2);
    assert_eq!(h.lease(&alive, 0, 1).unwrap().attempt, 2);
    assert!(matches!(
        h.state.heartbeat(&dead, &[], 2),
        Err(CoordinatorError::UnknownAgent(_))
    ));

    // Silence longer than the agent timeout loses an agent too.
    h.state.heartbeat(&alive, &[("a".into(), 2)], 100).unwrap();
    h.tick(6_000);
    assert!(h.state.agent(&alive).unwrap().lost);
    assert_eq!(h.counts("s").queued, 2);
}

#[test]
fn cancelling_a_sweep_stops_its_jobs_but_not_those_another_sweep_wants() {
    let mut h = Harness::new();
    h.submit("s", 0, vec![spec("a"), spec("b"), spec("shared")]);
    h.submit("other", 0, vec![spec("shared")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    let running = h.lease(&agent, 0, 0).unwrap();
    assert_eq!(running.spec.id, "a");
    let (cancelled, changes) = h.state.cancel_sweep("s").unwrap();
    h.store.apply(changes);
    assert_eq!(cancelled, 2);
    assert_eq!(
        h.counts("s"),
        SweepCounts {
            queued: 1,
            cancelled: 2,
            ..Default::default()
        }
    );
    let (cancel, _) = h.state.heartbeat(&agent, &[("a".into(), 1)], 10).unwrap();
    assert_eq!(
        cancel,
        vec![("a".to_string(), 1)],
        "the running job is told to stop"
    );
    assert_eq!(h.lease(&agent, 0, 10).unwrap().spec.id, "shared");
    assert!(matches!(
        h.state.cancel_sweep("nope"),
        Err(CoordinatorError::UnknownSweep(_))
    ));
}

#[test]
fn a_restarted_coordinator_carries_on_from_what_was_persisted() {
    let mut h = Harness::new();
    h.submit("s", 0, vec![spec("a"), spec("b"), spec("c")]);
    let keeper = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    let vanished = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    h.lease(&keeper, 0, 0).unwrap();
    h.lease(&vanished, 0, 0).unwrap();
    h.report(&keeper, "a", 1, 1).unwrap();

    // The coordinator dies; a new one starts from the store alone.
    let mut restored = h.store.restore(5_000);
    assert_eq!(
        restored
            .jobs()
            .map(|j| (j.spec.id.clone(), j.state.name(), j.completed_lifetimes))
            .collect::<Vec<_>>(),
        vec![
            ("a".to_string(), "running", 1),
            ("b".to_string(), "running", 0),
            ("c".to_string(), "queued", 0)
        ]
    );
    // The agent that is still alive re-registers with its running job and keeps it.
    let (id, kept, _) = restored
        .register_agent(
            caps("flex", vec![DeviceKind::Cpu], 1),
            VERSION,
            Some(keeper.clone()),
            &[("a".into(), 1)],
            5_100,
        )
        .unwrap();
    assert_eq!(
        (id.as_str(), kept),
        (keeper.as_str(), vec![("a".to_string(), 1)])
    );
    restored
        .report_metrics(&keeper, "a", 1, 2, "{}".into(), None)
        .unwrap();
    // The other one never comes back: after the grace period its job is queued again.
    restored
        .heartbeat(&keeper, &[("a".into(), 1)], 5_900)
        .unwrap();
    restored.tick(6_500);
    assert_eq!(restored.job("b").unwrap().state, JobState::Queued);
    assert!(matches!(
        restored.job("a").unwrap().state,
        JobState::Leased(_)
    ));
    // New agents get fresh ids after the old ones.
    let (fresh, _, _) = restored
        .register_agent(
            caps("flex", vec![DeviceKind::Cpu], 1),
            VERSION,
            None,
            &[],
            6_600,
        )
        .unwrap();
    assert_eq!(fresh, "agent-2");
}

#[test]
fn agents_of_another_version_are_refused() {
    let mut state = ClusterState::new(timing());
    let mut capabilities = caps("flex", vec![DeviceKind::Cpu], 1);
    capabilities.version = "0.2.0".into();
    assert!(matches!(
        state.register_agent(capabilities.clone(), "0.1.7", None, &[], 0),
        Err(CoordinatorError::VersionMismatch { .. })
    ));
    capabilities.version = "0.1.3".into();
    assert!(
        state
            .register_agent(capabilities.clone(), "0.1.7", None, &[], 0)
            .is_ok()
    );
    capabilities.slots = 0;
    assert!(matches!(
        state.register_agent(capabilities, "0.1.7", None, &[], 0),
        Err(CoordinatorError::InvalidArgument { .. })
    ));
}

#[test]
fn metrics_are_idempotent_per_lifetime() {
    let mut h = Harness::new();
    h.submit("s", 0, vec![spec("a")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    h.lease(&agent, 0, 0).unwrap();
    assert!(h.report(&agent, "a", 1, 1).unwrap());
    assert!(
        !h.report(&agent, "a", 1, 1).unwrap(),
        "the same report twice is stored once"
    );
    assert!(matches!(
        h.report(&agent, "a", 1, 0),
        Err(CoordinatorError::InvalidArgument { .. })
    ));
    assert!(matches!(
        h.report(&agent, "zzz", 1, 1),
        Err(CoordinatorError::UnknownJob(_))
    ));
    assert_eq!(h.store.metrics.len(), 1);
}

#[test]
fn a_failed_job_queued_again_by_another_sweep_runs_under_a_new_attempt_number() {
    let mut h = Harness::new();
    h.submit("first", 0, vec![spec("a")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    assert_eq!(h.lease(&agent, 0, 0).unwrap().attempt, 1);
    assert!(h.report(&agent, "a", 1, 1).unwrap());
    h.fail(&agent, "a", 1, "CUDA out of memory", false).unwrap();

    // Submitting it again queues it; its next attempt is 2, not 1 again: an attempt number
    // names one run of the job, in leases, reports, logs and an agent's re-registration. It
    // resumes after the lifetime its checkpoint holds.
    h.submit("second", 0, vec![spec("a")]);
    let resumed = h.lease(&agent, 0, 1).unwrap();
    assert_eq!(resumed.attempt, 2);
    assert_eq!(resumed.resume, Some((1, "ckpt-a-1".to_string())));
    assert!(
        !h.report(&agent, "a", 2, 1).unwrap(),
        "lifetime 1 is stored"
    );
    assert!(h.report(&agent, "a", 2, 2).unwrap());
    assert!(matches!(
        h.report(&agent, "a", 1, 3),
        Err(CoordinatorError::StaleAttempt { .. })
    ));

    // It has a fresh budget of max_attempts (3) from there: attempts 2, 3 and 4.
    let mut now = 2;
    for attempt in 2..=4 {
        if attempt > 2 {
            assert_eq!(h.lease(&agent, 0, now).unwrap().attempt, attempt);
        }
        let retry = h.fail(&agent, "a", attempt, "disk full", true).unwrap();
        assert_eq!(retry, attempt < 4, "attempt {attempt}");
        now += 1;
    }
    assert!(
        matches!(&h.state.job("a").unwrap().state, JobState::Failed { attempt: 4, reason } if reason.contains("gave up after 3 attempts")),
        "{:?}",
        h.state.job("a").unwrap().state
    );
    // What was persisted restores to the same numbering.
    let mut restored = h.store.restore(now);
    restored
        .submit_sweep("third".into(), "third".into(), 0, vec![spec("a")])
        .unwrap();
    let (grant, _) = restored.lease(&agent, 0, now).unwrap();
    assert_eq!(grant.unwrap().attempt, 5);
}

#[test]
fn retrying_a_sweeps_failed_jobs_queues_them_and_the_sources_they_wait_for() {
    let mut h = Harness::new();
    let source = source_spec();
    let tune = fine_tune_of_source;
    h.submit("s", 0, vec![source, tune("t1"), tune("t2"), spec("ok")]);
    let agent = h.register(caps("flex", vec![DeviceKind::Cpu], 1), 0);
    assert_eq!(h.lease(&agent, 0, 0).unwrap().spec.id, "src");
    h.fail(&agent, "src", 1, "no data", false).unwrap();
    let ok = h.lease(&agent, 0, 1).unwrap();
    h.complete(&agent, &ok.spec.id, ok.attempt).unwrap();
    assert_eq!(h.counts("s").failed, 3);
    assert_eq!(h.counts("s").succeeded, 1);

    let (retried, changes) = h.state.retry_failed("s").unwrap();
    h.store.apply(changes);
    assert_eq!(retried, 3);
    let counts = h.counts("s");
    assert_eq!((counts.queued, counts.succeeded, counts.failed), (3, 1, 0));
    // Persisted: a restart finds them queued.
    assert_eq!(h.store.restore(2).sweep_counts("s").unwrap().queued, 3);

    // The source goes first, as attempt 2; the fine-tunes wait for it, then run as attempt 1.
    let mut now = 2;
    let retried_source = h.lease(&agent, 0, now).unwrap();
    assert_eq!(
        (retried_source.spec.id.as_str(), retried_source.attempt),
        ("src", 2)
    );
    h.complete(&agent, "src", 2).unwrap();
    let mut tuned = Vec::new();
    while let Some(grant) = h.lease(&agent, 0, now) {
        tuned.push((grant.spec.id.clone(), grant.attempt));
        h.complete(&agent, &grant.spec.id, grant.attempt).unwrap();
        now += 1;
    }
    tuned.sort();
    assert_eq!(tuned, vec![("t1".into(), 1), ("t2".into(), 1)]);
    assert!(h.counts("s").is_done() && h.counts("s").failed == 0);

    // Nothing failed: nothing to do. Unknown and cancelled sweeps are refused.
    assert_eq!(h.state.retry_failed("s").unwrap().0, 0);
    assert!(matches!(
        h.state.retry_failed("nope"),
        Err(CoordinatorError::UnknownSweep(_))
    ));
    h.submit("doomed", 0, vec![spec("d")]);
    let (_, changes) = h.state.cancel_sweep("doomed").unwrap();
    h.store.apply(changes);
    assert!(matches!(
        h.state.retry_failed("doomed"),
        Err(CoordinatorError::SweepCancelled(_))
    ));
}
