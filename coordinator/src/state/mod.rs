//! The coordinator's state machine: pure, no I/O, driven by one event loop with a clock passed
//! in (`now_ms`), so tests drive it with a virtual clock.
//!
//! Every mutating call returns the [`Change`]s the event loop must persist, in one transaction,
//! before it answers the caller. [`ClusterState::restore`] rebuilds the state from what was
//! persisted, so a restarted coordinator carries on.
//!
//! Guarantees:
//! - a job runs at least once: a lease that is not extended by heartbeats expires and the job is
//!   queued again as attempt n+1, up to `max_attempts`, then fails with its reason kept;
//! - only the attempt holding the lease may report; a stale attempt's reports are refused;
//! - metrics are recorded once per (job, lifetime): a repeated report is acknowledged, not stored;
//! - a job whose configuration was already run (same id, in any sweep) is not run again;
//! - a fine-tune waits for its source job; if that fails, so does the fine-tune;
//! - a failed job stays failed until its sweep is retried ([`ClusterState::retry_failed`]) or it
//!   is submitted in another sweep; it then runs as the next attempt number (a job's attempt
//!   numbers never repeat) with a fresh budget of `max_attempts`;
//! - sweeps share agents fairly (fewest running jobs first) within a priority, higher first.

mod queue;
mod sweep_lookup;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{
    Agent, AgentCapabilities, AgentId, ArtifactHash, Job, JobId, JobSpec, JobState, Lease, Sweep,
    SweepId,
};
use crate::error::{CoordinatorError, Result};
use queue::{Candidate, SweepQueues};
pub use sweep_lookup::{SharedName, find_sweep};

/// (job, attempt) pairs, as agents report what they run.
pub type Attempts = Vec<(JobId, u32)>;

/// Lease and retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A lease lives this long after its last heartbeat.
    pub lease_timeout_ms: u64,
    /// Agents are asked to heartbeat this often.
    pub heartbeat_interval_ms: u64,
    /// An agent silent this long is lost; its leases are released at once.
    pub agent_timeout_ms: u64,
    /// Attempts before a job fails for good.
    pub max_attempts: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_timeout_ms: 60_000,
            heartbeat_interval_ms: 5_000,
            agent_timeout_ms: 120_000,
            max_attempts: 3,
        }
    }
}

/// One lifetime's metrics of an attempt, to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsRecord {
    pub job: JobId,
    pub attempt: u32,
    pub lifetime: u32,
    pub metrics_json: String,
}

/// What the event loop must persist after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Job(Box<Job>),
    Sweep(Sweep),
    Agent(Agent),
    Metrics(MetricsRecord),
    /// The final summary of a succeeded job.
    Summary {
        job: JobId,
        attempt: u32,
        summary_json: String,
    },
    /// A CIFAR archive the coordinator now serves.
    Dataset(crate::datasets::StoredDataset),
}

/// What a lease hands to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    pub spec: JobSpec,
    pub attempt: u32,
    pub deadline_ms: u64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Output of the dependency (the source model of a fine-tune).
    pub source_artifact: Option<ArtifactHash>,
    /// Checkpoint to resume from, and the lifetimes it holds.
    pub resume: Option<(u32, ArtifactHash)>,
    pub completed_lifetimes: u32,
}

/// Counts of a sweep's jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCounts {
    pub queued: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl SweepCounts {
    pub fn total(&self) -> u32 {
        self.queued + self.running + self.succeeded + self.failed + self.cancelled
    }
    pub fn is_done(&self) -> bool {
        self.queued == 0 && self.running == 0
    }
}

/// Result of a sweep submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub jobs: u32,
    /// Jobs already succeeded in an earlier sweep: their results are reused.
    pub reused: u32,
}

/// The whole state.
#[derive(Debug, Clone)]
pub struct ClusterState {
    timing: Timing,
    jobs: BTreeMap<JobId, Job>,
    sweeps: BTreeMap<SweepId, Sweep>,
    agents: BTreeMap<AgentId, Agent>,
    next_sequence: u64,
    next_agent_number: u64,
    // Indexes, rebuilt on restore, never persisted.
    queues: SweepQueues,
    slots: BTreeMap<(AgentId, u32), JobId>,
}

fn stale(job: &Job, attempt: u32, agent: &str) -> CoordinatorError {
    let current = match &job.state {
        JobState::Leased(lease) => {
            format!("attempt {} is leased to `{}`", lease.attempt, lease.agent)
        }
        other => format!("the job is {}", other.name()),
    };
    CoordinatorError::StaleAttempt {
        job: job.spec.id.clone(),
        attempt,
        agent: agent.to_string(),
        current,
    }
}

/// `major.minor` of a version string.
fn major_minor(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((index, _)) => &version[..index],
        None => version,
    }
}

impl ClusterState {
    pub fn new(timing: Timing) -> Self {
        ClusterState {
            timing,
            jobs: BTreeMap::new(),
            sweeps: BTreeMap::new(),
            agents: BTreeMap::new(),
            next_sequence: 0,
            next_agent_number: 0,
            queues: SweepQueues::default(),
            slots: BTreeMap::new(),
        }
    }

    /// Rebuilds the state from persisted rows. Leases survive the restart with a fresh grace
    /// period: they stay with their agents if those heartbeat in time, and expire otherwise.
    pub fn restore(
        timing: Timing,
        jobs: Vec<Job>,
        sweeps: Vec<Sweep>,
        agents: Vec<Agent>,
        now_ms: u64,
    ) -> Self {
        let mut state = ClusterState::new(timing);
        for mut agent in agents {
            agent.last_heartbeat_ms = now_ms;
            if let Some(number) = agent
                .id
                .strip_prefix("agent-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                state.next_agent_number = state.next_agent_number.max(number + 1);
            }
            state.agents.insert(agent.id.clone(), agent);
        }
        for sweep in sweeps {
            state.next_sequence = state.next_sequence.max(sweep.sequence + 1);
            state.sweeps.insert(sweep.id.clone(), sweep);
        }
        for mut job in jobs {
            state.next_sequence = state.next_sequence.max(job.sequence + 1);
            if let JobState::Leased(lease) = &mut job.state {
                lease.deadline_ms = lease.deadline_ms.max(now_ms + timing.lease_timeout_ms);
                state
                    .slots
                    .insert((lease.agent.clone(), lease.slot), job.spec.id.clone());
            }
            state.jobs.insert(job.spec.id.clone(), job);
        }
        state.rebuild_queues();
        state
    }

    fn rebuild_queues(&mut self) {
        self.queues = SweepQueues::default();
        let mut sweeps: Vec<&Sweep> = self.sweeps.values().collect();
        sweeps.sort_by_key(|s| s.sequence);
        for sweep in sweeps {
            self.queues.add_sweep(sweep);
            for id in &sweep.jobs {
                if let Some(job) = self.jobs.get(id) {
                    match &job.state {
                        JobState::Queued => self.queues.push(&sweep.id, id),
                        JobState::Leased(_) => self.queues.started(&job.sweeps),
                        _ => {}
                    }
                }
            }
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn sweep(&self, id: &str) -> Option<&Sweep> {
        self.sweeps.get(id)
    }

    /// The sweep `wanted` names: its id, its name, or a prefix only its id has
    /// ([`find_sweep`]).
    pub fn find_sweep(&self, wanted: &str, shared_name: SharedName) -> Result<&Sweep> {
        find_sweep(self.sweeps.values(), wanted, shared_name)
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    pub fn sweeps(&self) -> impl Iterator<Item = &Sweep> {
        self.sweeps.values()
    }

    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    fn job_change(&self, id: &str) -> Change {
        Change::Job(Box::new(self.jobs[id].clone()))
    }

    /// Adds a sweep and its jobs. Jobs that exist already (same id, any sweep) are shared, not
    /// duplicated; succeeded ones are reused; failed or cancelled ones are queued again.
    pub fn submit_sweep(
        &mut self,
        id: SweepId,
        name: String,
        priority: i32,
        specs: Vec<JobSpec>,
    ) -> Result<(Submitted, Vec<Change>)> {
        if self.sweeps.contains_key(&id) {
            return Err(CoordinatorError::DuplicateSweep(id));
        }
        let known: BTreeSet<&JobId> = specs.iter().map(|s| &s.id).collect();
        for spec in &specs {
            if let Some(dependency) = &spec.depends_on
                && !known.contains(dependency)
                && !self.jobs.contains_key(dependency)
            {
                return Err(CoordinatorError::InvalidArgument {
                    what: "sweep",
                    reason: format!("job `{}` depends on unknown job `{dependency}`", spec.id),
                });
            }
        }
        let sweep = Sweep {
            id: id.clone(),
            name,
            priority,
            jobs: Vec::new(),
            cancelled: false,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        self.sweeps.insert(id.clone(), sweep);
        self.queues.add_sweep(&self.sweeps[&id]);
        let mut changes = Vec::new();
        let mut reused = 0;
        let mut listed = BTreeSet::new();
        for spec in specs {
            if !listed.insert(spec.id.clone()) {
                continue; // the same configuration twice in one sweep
            }
            let job_id = spec.id.clone();
            match self.jobs.get_mut(&job_id) {
                Some(job) => {
                    job.sweeps.insert(id.clone());
                    match job.state {
                        JobState::Succeeded { .. } => reused += 1,
                        JobState::Failed { .. } | JobState::Cancelled => {
                            job.queue_afresh();
                            self.queues.push(&id, &job_id);
                        }
                        JobState::Queued => self.queues.push(&id, &job_id),
                        JobState::Leased(_) => self.queues.started(&BTreeSet::from([id.clone()])),
                    }
                }
                None => {
                    let job = Job {
                        spec,
                        state: JobState::Queued,
                        attempts: 0,
                        attempts_before_this_run: 0,
                        sweeps: BTreeSet::from([id.clone()]),
                        completed_lifetimes: 0,
                        checkpoint: None,
                        sequence: self.next_sequence,
                    };
                    self.next_sequence += 1;
                    self.jobs.insert(job_id.clone(), job);
                    self.queues.push(&id, &job_id);
                }
            }
            self.sweeps
                .get_mut(&id)
                .expect("inserted above")
                .jobs
                .push(job_id.clone());
            changes.push(self.job_change(&job_id));
        }
        let sweep = &self.sweeps[&id];
        changes.push(Change::Sweep(sweep.clone()));
        let submitted = Submitted {
            jobs: sweep.jobs.len() as u32,
            reused,
        };
        Ok((submitted, changes))
    }

    /// Registers an agent, or re-registers one that lost the coordinator. Of the attempts it
    /// says it runs, it keeps those still leased to it.
    pub fn register_agent(
        &mut self,
        capabilities: AgentCapabilities,
        coordinator_version: &str,
        previous: Option<AgentId>,
        running: &[(JobId, u32)],
        now_ms: u64,
    ) -> Result<(AgentId, Attempts, Vec<Change>)> {
        if major_minor(&capabilities.version) != major_minor(coordinator_version) {
            return Err(CoordinatorError::VersionMismatch {
                agent_version: capabilities.version,
                coordinator_version: coordinator_version.to_string(),
            });
        }
        if capabilities.slots == 0 {
            return Err(CoordinatorError::InvalidArgument {
                what: "capabilities",
                reason: "an agent needs at least one slot".into(),
            });
        }
        let id = match previous.filter(|id| self.agents.contains_key(id)) {
            Some(id) => id,
            None => {
                let id = format!("agent-{}", self.next_agent_number);
                self.next_agent_number += 1;
                id
            }
        };
        self.agents.insert(
            id.clone(),
            Agent {
                id: id.clone(),
                capabilities,
                last_heartbeat_ms: now_ms,
                lost: false,
            },
        );
        let mut changes = vec![Change::Agent(self.agents[&id].clone())];
        let mut kept = Vec::new();
        for (job_id, attempt) in running {
            if let Some(job) = self.jobs.get_mut(job_id)
                && let JobState::Leased(lease) = &mut job.state
                && lease.agent == id
                && lease.attempt == *attempt
            {
                lease.deadline_ms = now_ms + self.timing.lease_timeout_ms;
                kept.push((job_id.clone(), *attempt));
                changes.push(Change::Job(Box::new(job.clone())));
            }
        }
        Ok((id, kept, changes))
    }

    /// `Ok` if `agent` is registered and not lost; [`CoordinatorError::UnknownAgent`] otherwise.
    pub fn check_agent(&self, agent: &str) -> Result<()> {
        self.known_agent(agent).map(|_| ())
    }

    fn known_agent(&self, agent: &str) -> Result<&Agent> {
        self.agents
            .get(agent)
            .filter(|a| !a.lost)
            .ok_or_else(|| CoordinatorError::UnknownAgent(agent.to_string()))
    }

    /// Extends the agent's leases; returns the attempts it must stop (cancelled, or no longer
    /// its lease).
    pub fn heartbeat(
        &mut self,
        agent: &str,
        running: &[(JobId, u32)],
        now_ms: u64,
    ) -> Result<(Attempts, Vec<Change>)> {
        self.known_agent(agent)?;
        let deadline = now_ms + self.timing.lease_timeout_ms;
        let mut cancel = Vec::new();
        let mut changes = Vec::new();
        for (job_id, attempt) in running {
            match self.jobs.get_mut(job_id) {
                Some(job) => match &mut job.state {
                    JobState::Leased(lease)
                        if lease.agent == agent && lease.attempt == *attempt =>
                    {
                        lease.deadline_ms = deadline;
                    }
                    _ => cancel.push((job_id.clone(), *attempt)),
                },
                None => cancel.push((job_id.clone(), *attempt)),
            }
        }
        let record = self.agents.get_mut(agent).expect("checked above");
        record.last_heartbeat_ms = now_ms;
        // Deadlines move every heartbeat; persisting the agent is enough to restore them (a
        // restart grants a fresh grace period), so leases are not rewritten here.
        changes.push(Change::Agent(record.clone()));
        Ok((cancel, changes))
    }

    /// Leases the next job that fits the agent to its `slot`, if any.
    pub fn lease(
        &mut self,
        agent: &str,
        slot: u32,
        now_ms: u64,
    ) -> Result<(Option<LeaseGrant>, Vec<Change>)> {
        let record = self.known_agent(agent)?.clone();
        if slot >= record.capabilities.slots {
            return Err(CoordinatorError::NoSuchSlot {
                agent: agent.to_string(),
                slot,
                slots: record.capabilities.slots,
            });
        }
        if let Some(job) = self.slots.get(&(agent.to_string(), slot)) {
            return Err(CoordinatorError::SlotBusy {
                agent: agent.to_string(),
                slot,
                job: job.clone(),
            });
        }
        let jobs = &self.jobs;
        let sweeps = &self.sweeps;
        let eligible = |id: &JobId| -> Candidate {
            let Some(job) = jobs.get(id) else {
                return Candidate::Drop;
            };
            if job.state != JobState::Queued {
                return Candidate::Drop;
            }
            if !record.can_run(&job.spec.resources) {
                return Candidate::Keep;
            }
            match &job.spec.depends_on {
                None => Candidate::Take,
                Some(dependency) => match jobs.get(dependency).map(|d| &d.state) {
                    Some(JobState::Succeeded { .. }) => Candidate::Take,
                    _ => Candidate::Keep,
                },
            }
        };
        let Some(job_id) = self.queues.next_eligible(sweeps, eligible) else {
            return Ok((None, Vec::new()));
        };
        let job = self.jobs.get_mut(&job_id).expect("queued jobs exist");
        job.attempts += 1;
        let lease = Lease {
            agent: agent.to_string(),
            slot,
            attempt: job.attempts,
            deadline_ms: now_ms + self.timing.lease_timeout_ms,
        };
        job.state = JobState::Leased(lease.clone());
        let sweeps_of_job = job.sweeps.clone();
        self.queues.started(&sweeps_of_job);
        self.slots.insert((agent.to_string(), slot), job_id.clone());
        let job = &self.jobs[&job_id];
        let source_artifact =
            job.spec
                .depends_on
                .as_ref()
                .and_then(|d| match &self.jobs[d].state {
                    JobState::Succeeded { output, .. } => output.clone(),
                    _ => None,
                });
        let grant = LeaseGrant {
            spec: job.spec.clone(),
            attempt: lease.attempt,
            deadline_ms: lease.deadline_ms,
            device: record.device_kind_of_jobs(),
            source_artifact,
            resume: job.checkpoint.clone(),
            completed_lifetimes: job.completed_lifetimes,
        };
        Ok((Some(grant), vec![self.job_change(&job_id)]))
    }

    /// Checks that `agent` holds the lease of `attempt` of `job`.
    fn holder(&self, agent: &str, job_id: &str, attempt: u32) -> Result<&Lease> {
        let job = self
            .jobs
            .get(job_id)
            .ok_or_else(|| CoordinatorError::UnknownJob(job_id.to_string()))?;
        match &job.state {
            JobState::Leased(lease) if lease.agent == agent && lease.attempt == attempt => {
                Ok(lease)
            }
            _ => Err(stale(job, attempt, agent)),
        }
    }

    /// Records one lifetime of the attempt holding the lease. Returns whether it was new: a
    /// lifetime already recorded (by this or an earlier attempt) is acknowledged, not stored.
    pub fn report_metrics(
        &mut self,
        agent: &str,
        job_id: &str,
        attempt: u32,
        lifetime: u32,
        metrics_json: String,
        checkpoint: Option<ArtifactHash>,
    ) -> Result<(bool, Vec<Change>)> {
        self.known_agent(agent)?;
        self.holder(agent, job_id, attempt)?;
        if lifetime == 0 {
            return Err(CoordinatorError::InvalidArgument {
                what: "metrics",
                reason: "lifetimes are numbered from 1".into(),
            });
        }
        let job = self.jobs.get_mut(job_id).expect("holder found it");
        if lifetime <= job.completed_lifetimes {
            return Ok((false, Vec::new()));
        }
        job.completed_lifetimes = lifetime;
        if let Some(artifact) = checkpoint {
            job.checkpoint = Some((lifetime, artifact));
        }
        let record = MetricsRecord {
            job: job_id.to_string(),
            attempt,
            lifetime,
            metrics_json,
        };
        Ok((true, vec![Change::Metrics(record), self.job_change(job_id)]))
    }

    fn release_slot(&mut self, job_id: &str) {
        if let Some(JobState::Leased(lease)) = self.jobs.get(job_id).map(|j| &j.state) {
            self.slots.remove(&(lease.agent.clone(), lease.slot));
            let sweeps = self.jobs[job_id].sweeps.clone();
            self.queues.stopped(&sweeps);
        }
    }

    /// Ends the attempt holding the lease successfully.
    pub fn complete(
        &mut self,
        agent: &str,
        job_id: &str,
        attempt: u32,
        summary_json: String,
        output: Option<ArtifactHash>,
    ) -> Result<Vec<Change>> {
        self.known_agent(agent)?;
        self.holder(agent, job_id, attempt)?;
        self.release_slot(job_id);
        let job = self.jobs.get_mut(job_id).expect("holder found it");
        job.state = JobState::Succeeded { attempt, output };
        Ok(vec![
            Change::Summary {
                job: job_id.to_string(),
                attempt,
                summary_json,
            },
            self.job_change(job_id),
        ])
    }

    /// Ends the attempt holding the lease with an error. Retryable errors queue the job again
    /// while attempts remain. Returns whether it will be retried.
    pub fn fail(
        &mut self,
        agent: &str,
        job_id: &str,
        attempt: u32,
        reason: String,
        retryable: bool,
    ) -> Result<(bool, Vec<Change>)> {
        self.known_agent(agent)?;
        self.holder(agent, job_id, attempt)?;
        let mut changes = Vec::new();
        let retry = self.end_attempt(job_id, retryable, reason, &mut changes);
        Ok((retry, changes))
    }

    /// Releases a leased job: queued again if `retry` and attempts remain, else failed (and its
    /// dependents with it). Returns whether it was queued again.
    fn end_attempt(
        &mut self,
        job_id: &str,
        retry: bool,
        reason: String,
        changes: &mut Vec<Change>,
    ) -> bool {
        self.release_slot(job_id);
        let max_attempts = self.timing.max_attempts;
        let job = self.jobs.get_mut(job_id).expect("leased jobs exist");
        let attempt = job.attempts;
        debug_assert!(
            job.attempts_before_this_run < attempt,
            "ends an attempt it started"
        );
        let attempts_this_run = attempt - job.attempts_before_this_run;
        let will_retry = retry && attempts_this_run < max_attempts;
        if will_retry {
            job.state = JobState::Queued;
            let sweeps: Vec<SweepId> = job.sweeps.iter().cloned().collect();
            for sweep in sweeps {
                self.queues.push_front(&sweep, job_id);
            }
        } else {
            let reason = if retry {
                format!("{reason} (gave up after {attempts_this_run} attempts)")
            } else {
                reason
            };
            job.state = JobState::Failed { attempt, reason };
        }
        changes.push(self.job_change(job_id));
        if !will_retry {
            self.fail_dependents(job_id, changes);
        }
        will_retry
    }

    fn fail_dependents(&mut self, failed: &str, changes: &mut Vec<Change>) {
        let dependents: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.spec.depends_on.as_deref() == Some(failed) && j.state == JobState::Queued)
            .map(|j| j.spec.id.clone())
            .collect();
        for id in dependents {
            let job = self.jobs.get_mut(&id).expect("listed above");
            job.state = JobState::Failed {
                attempt: job.attempts,
                reason: format!("its source job `{failed}` failed"),
            };
            changes.push(self.job_change(&id));
            self.fail_dependents(&id, changes);
        }
    }

    /// Advances the clock: expired leases are queued again as a new attempt (or fail after
    /// `max_attempts`); silent agents are lost.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        let silent: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                !a.lost && now_ms.saturating_sub(a.last_heartbeat_ms) > self.timing.agent_timeout_ms
            })
            .map(|a| a.id.clone())
            .collect();
        for agent in silent {
            changes.extend(self.lose_agent(&agent));
        }
        let expired: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| matches!(&j.state, JobState::Leased(lease) if lease.deadline_ms < now_ms))
            .map(|j| j.spec.id.clone())
            .collect();
        for job_id in expired {
            tracing::warn!(job = %job_id, "lease expired");
            self.end_attempt(&job_id, true, "lease expired".into(), &mut changes);
        }
        changes
    }

    /// Gives up on an agent: its leased jobs are queued again at once.
    pub fn lose_agent(&mut self, agent: &str) -> Vec<Change> {
        let Some(record) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        record.lost = true;
        let mut changes = vec![Change::Agent(record.clone())];
        let held: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| matches!(&j.state, JobState::Leased(lease) if lease.agent == agent))
            .map(|j| j.spec.id.clone())
            .collect();
        for job_id in held {
            tracing::warn!(job = %job_id, agent, "agent lost; job queued again");
            self.end_attempt(
                &job_id,
                true,
                format!("agent `{agent}` was lost"),
                &mut changes,
            );
        }
        changes
    }

    /// Cancels a sweep: its jobs that no other live sweep wants, and that have not finished,
    /// are cancelled (running ones are told to stop at their next heartbeat).
    pub fn cancel_sweep(&mut self, sweep_id: &str) -> Result<(u32, Vec<Change>)> {
        let sweep = self
            .sweeps
            .get_mut(sweep_id)
            .ok_or_else(|| CoordinatorError::UnknownSweep(sweep_id.to_string()))?;
        sweep.cancelled = true;
        let mut changes = vec![Change::Sweep(sweep.clone())];
        let job_ids = sweep.jobs.clone();
        let mut cancelled = 0;
        for job_id in job_ids {
            let wanted_elsewhere = self.jobs[&job_id]
                .sweeps
                .iter()
                .any(|s| s != sweep_id && self.sweeps.get(s).is_some_and(|s| !s.cancelled));
            if wanted_elsewhere || self.jobs[&job_id].state.is_finished() {
                continue;
            }
            self.release_slot(&job_id);
            self.jobs.get_mut(&job_id).expect("listed").state = JobState::Cancelled;
            cancelled += 1;
            changes.push(self.job_change(&job_id));
        }
        Ok((cancelled, changes))
    }

    /// Queues a sweep's failed jobs again (`ndhtl run --retry-failed`), with any failed job they
    /// depend on: each runs as a new attempt number with a fresh budget of `max_attempts`, and
    /// resumes from its last checkpoint. A cancelled sweep is refused: nothing would lease its
    /// jobs. Returns how many jobs were queued.
    pub fn retry_failed(&mut self, sweep_id: &str) -> Result<(u32, Vec<Change>)> {
        let sweep = self
            .sweeps
            .get(sweep_id)
            .ok_or_else(|| CoordinatorError::UnknownSweep(sweep_id.to_string()))?;
        if sweep.cancelled {
            return Err(CoordinatorError::SweepCancelled(sweep_id.to_string()));
        }
        let is_failed = |job: &Job| matches!(job.state, JobState::Failed { .. });
        let mut to_retry: Vec<JobId> = Vec::new();
        let mut listed: BTreeSet<JobId> = BTreeSet::new();
        for job_id in &sweep.jobs {
            // The job, then its failed dependencies: retried dependencies first.
            let mut chain = Vec::new();
            let mut next = Some(job_id);
            while let Some(id) = next {
                let job = &self.jobs[id];
                if !is_failed(job) || !listed.insert(id.clone()) {
                    break;
                }
                chain.push(id.clone());
                next = job.spec.depends_on.as_ref();
            }
            to_retry.extend(chain.into_iter().rev());
        }
        let mut changes = Vec::with_capacity(to_retry.len());
        for job_id in &to_retry {
            self.jobs
                .get_mut(job_id)
                .expect("listed from the jobs")
                .queue_afresh();
            self.queues.push(sweep_id, job_id);
            changes.push(self.job_change(job_id));
        }
        Ok((to_retry.len() as u32, changes))
    }

    /// A sweep's jobs by state.
    pub fn sweep_counts(&self, sweep_id: &str) -> Result<SweepCounts> {
        let sweep = self
            .sweeps
            .get(sweep_id)
            .ok_or_else(|| CoordinatorError::UnknownSweep(sweep_id.to_string()))?;
        let mut counts = SweepCounts::default();
        for id in &sweep.jobs {
            match self.jobs[id].state {
                JobState::Queued => counts.queued += 1,
                JobState::Leased(_) => counts.running += 1,
                JobState::Succeeded { .. } => counts.succeeded += 1,
                JobState::Failed { .. } => counts.failed += 1,
                JobState::Cancelled => counts.cancelled += 1,
            }
        }
        Ok(counts)
    }

    /// Attempts currently leased to `agent`.
    pub fn leases_of(&self, agent: &str) -> Vec<(JobId, u32)> {
        self.jobs
            .values()
            .filter_map(|j| match &j.state {
                JobState::Leased(lease) if lease.agent == agent => {
                    Some((j.spec.id.clone(), lease.attempt))
                }
                _ => None,
            })
            .collect()
    }
}
