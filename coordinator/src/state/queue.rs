//! Per-sweep job queues and running counts: the index behind fair scheduling. Rebuilt from the
//! jobs on restore; never persisted.
//!
//! Entries are removed lazily: a job that left the queued state through another sweep's queue is
//! dropped when it is next scanned.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::domain::{JobId, Sweep, SweepId};

/// What the scheduler thinks of a queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// Lease it.
    Take,
    /// Not for this agent, or waiting for its dependency: leave it queued.
    Keep,
    /// No longer queued: remove the entry.
    Drop,
}

#[derive(Debug, Clone, Default)]
pub struct SweepQueues {
    queues: BTreeMap<SweepId, VecDeque<JobId>>,
    running: BTreeMap<SweepId, u32>,
}

impl SweepQueues {
    pub fn add_sweep(&mut self, sweep: &Sweep) {
        self.queues.entry(sweep.id.clone()).or_default();
        self.running.entry(sweep.id.clone()).or_default();
    }

    pub fn push(&mut self, sweep: &str, job: &str) {
        self.queues
            .entry(sweep.to_string())
            .or_default()
            .push_back(job.to_string());
    }

    /// A retried job goes first: it already waited its turn.
    pub fn push_front(&mut self, sweep: &str, job: &str) {
        self.queues
            .entry(sweep.to_string())
            .or_default()
            .push_front(job.to_string());
    }

    pub fn started(&mut self, sweeps: &BTreeSet<SweepId>) {
        for sweep in sweeps {
            *self.running.entry(sweep.clone()).or_default() += 1;
        }
    }

    pub fn stopped(&mut self, sweeps: &BTreeSet<SweepId>) {
        for sweep in sweeps {
            let count = self.running.entry(sweep.clone()).or_default();
            *count = count.saturating_sub(1);
        }
    }

    pub fn running(&self, sweep: &str) -> u32 {
        self.running.get(sweep).copied().unwrap_or(0)
    }

    /// The next job to lease: sweeps by priority (higher first), then fewest running jobs (fair
    /// share), then submission order; within a sweep, queue order. Removes the taken entry.
    pub fn next_eligible(
        &mut self,
        sweeps: &BTreeMap<SweepId, Sweep>,
        mut judge: impl FnMut(&JobId) -> Candidate,
    ) -> Option<JobId> {
        let mut order: Vec<&Sweep> = sweeps.values().filter(|s| !s.cancelled).collect();
        order.sort_by_key(|s| {
            (
                std::cmp::Reverse(s.priority),
                self.running(&s.id),
                s.sequence,
            )
        });
        for sweep in order {
            let Some(queue) = self.queues.get_mut(&sweep.id) else {
                continue;
            };
            let mut index = 0;
            while index < queue.len() {
                match judge(&queue[index]) {
                    Candidate::Take => return queue.remove(index),
                    Candidate::Drop => {
                        queue.remove(index);
                    }
                    Candidate::Keep => index += 1,
                }
            }
        }
        None
    }
}
