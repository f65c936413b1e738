//! The one event loop: a thread that owns the [`ClusterState`] and the [`Store`]. Every call is a
//! command; its changes are written in one transaction before the reply is sent, so nothing an
//! agent or client was told is lost on a crash. A timer ticks the state (expired leases, lost
//! agents).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use ndhtl_core::dataset::DatasetKind;

use super::clock::Clock;
use super::dataset_loop::{DatasetReply, DatasetView, LoopDatasets};
use crate::datasets::StoredDataset;
use crate::datasets::fetcher::DatasetSource;
use crate::domain::{AgentCapabilities, AgentId, ArtifactHash, JobId, JobSpec, SweepId};
use crate::error::CoordinatorError;
use crate::state::{Change, ClusterState, LeaseGrant, Submitted, SweepCounts};
use crate::store::{Store, StoreError};

/// Why a call through the event loop failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// The state changed in memory but could not be persisted: the coordinator stops, and a
    /// restart carries on from the last good transaction.
    #[error("the state database failed: {0}")]
    Store(#[from] StoreError),
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Report(#[from] ndhtl_core::report::ReportError),
}

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;
type Inspector = Box<dyn FnOnce(&ClusterState, &Store, u64) + Send>;

pub(super) enum Command {
    Register {
        capabilities: AgentCapabilities,
        previous: Option<AgentId>,
        running: Vec<(JobId, u32)>,
        reply: Reply<(AgentId, Vec<(JobId, u32)>)>,
    },
    Heartbeat {
        agent: AgentId,
        running: Vec<(JobId, u32)>,
        reply: Reply<Vec<(JobId, u32)>>,
    },
    Lease {
        agent: AgentId,
        slot: u32,
        reply: Reply<Option<LeaseGrant>>,
    },
    Metrics {
        agent: AgentId,
        job: JobId,
        attempt: u32,
        lifetime: u32,
        metrics_json: String,
        checkpoint: Option<ArtifactHash>,
        reply: Reply<bool>,
    },
    Complete {
        agent: AgentId,
        job: JobId,
        attempt: u32,
        summary_json: String,
        output: Option<ArtifactHash>,
        reply: Reply<()>,
    },
    Fail {
        agent: AgentId,
        job: JobId,
        attempt: u32,
        reason: String,
        retryable: bool,
        reply: Reply<bool>,
    },
    Submit {
        id: SweepId,
        name: String,
        priority: i32,
        specs: Vec<JobSpec>,
        reply: Reply<Submitted>,
    },
    Cancel {
        sweep: SweepId,
        reply: Reply<u32>,
    },
    RetryFailed {
        sweep: SweepId,
        reply: Reply<u32>,
    },
    Counts {
        sweep: SweepId,
        reply: Reply<SweepCounts>,
    },
    LoseAgent {
        agent: AgentId,
        reply: Reply<()>,
    },
    Dataset {
        agent: AgentId,
        dataset: DatasetKind,
        reply: Reply<DatasetReply>,
    },
    /// A fetch thread finished (no reply).
    DatasetFetched {
        dataset: DatasetKind,
        outcome: Result<StoredDataset, String>,
    },
    Datasets {
        reply: oneshot::Sender<Vec<DatasetView>>,
    },
    Inspect {
        inspect: Inspector,
    },
    Stop,
}

/// A cheap, clonable handle to the event loop.
#[derive(Clone)]
pub struct CoordinatorHandle {
    sender: Sender<Command>,
}

/// Starts the event loop on its own thread, from the store's persisted state. It serves only
/// the datasets already stored, and fetches none.
pub fn spawn_event_loop(
    store: Store,
    timing: crate::state::Timing,
    clock: impl Clock,
) -> Result<(CoordinatorHandle, JoinHandle<()>), StoreError> {
    spawn_event_loop_with(store, timing, clock, None)
}

/// [`spawn_event_loop`], fetching and serving CIFAR from `datasets`.
pub fn spawn_event_loop_with(
    store: Store,
    timing: crate::state::Timing,
    clock: impl Clock,
    datasets: Option<DatasetSource>,
) -> Result<(CoordinatorHandle, JoinHandle<()>), StoreError> {
    let snapshot = store.load()?;
    let state = ClusterState::restore(
        timing,
        snapshot.jobs,
        snapshot.sweeps,
        snapshot.agents,
        clock.now_ms(),
    );
    let (sender, receiver) = channel();
    // Fetch threads report back through the loop's own channel. Only a coordinator that
    // fetches keeps a sender; it stops on `stop()`, like every served coordinator.
    let mut datasets = LoopDatasets::new(
        datasets.map(|source| (source, sender.clone())),
        snapshot.datasets,
    );
    datasets.start(clock.now_ms());
    let thread = std::thread::Builder::new()
        .name("ndhtl-coordinator".into())
        .spawn(move || run(state, datasets, store, receiver, clock))
        .expect("spawning the coordinator thread");
    Ok((CoordinatorHandle { sender }, thread))
}

fn persist(store: &mut Store, changes: Vec<Change>) -> Result<(), ServiceError> {
    store.apply(&changes).map_err(|error| {
        tracing::error!(%error, "state database write failed; stopping");
        ServiceError::Store(error)
    })
}

/// Applies a state call and persists its changes before answering.
fn answer<T>(
    store: &mut Store,
    reply: Reply<T>,
    result: Result<(T, Vec<Change>), CoordinatorError>,
) -> bool {
    let outcome = match result {
        Ok((value, changes)) => persist(store, changes).map(|()| value),
        Err(error) => Err(ServiceError::Coordinator(error)),
    };
    let fatal = matches!(outcome, Err(ServiceError::Store(_)));
    let _ = reply.send(outcome);
    !fatal
}

fn run(
    mut state: ClusterState,
    mut datasets: LoopDatasets,
    mut store: Store,
    receiver: Receiver<Command>,
    clock: impl Clock,
) {
    let tick_every = Duration::from_millis((state.timing().heartbeat_interval_ms / 2).max(10));
    let mut next_tick = std::time::Instant::now() + tick_every;
    loop {
        let wait = next_tick.saturating_duration_since(std::time::Instant::now());
        let command = match receiver.recv_timeout(wait) {
            Ok(command) => command,
            Err(RecvTimeoutError::Timeout) => {
                next_tick = std::time::Instant::now() + tick_every;
                let changes = state.tick(clock.now_ms());
                if persist(&mut store, changes).is_err() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let now = clock.now_ms();
        let healthy = match command {
            Command::Register {
                capabilities,
                previous,
                running,
                reply,
            } => {
                let result = state
                    .register_agent(capabilities, crate::VERSION, previous, &running, now)
                    .map(|(id, kept, changes)| ((id, kept), changes));
                answer(&mut store, reply, result)
            }
            Command::Heartbeat {
                agent,
                running,
                reply,
            } => answer(&mut store, reply, state.heartbeat(&agent, &running, now)),
            Command::Lease { agent, slot, reply } => {
                answer(&mut store, reply, state.lease(&agent, slot, now))
            }
            Command::Metrics {
                agent,
                job,
                attempt,
                lifetime,
                metrics_json,
                checkpoint,
                reply,
            } => answer(
                &mut store,
                reply,
                state.report_metrics(&agent, &job, attempt, lifetime, metrics_json, checkpoint),
            ),
            Command::Complete {
                agent,
                job,
                attempt,
                summary_json,
                output,
                reply,
            } => answer(
                &mut store,
                reply,
                state
                    .complete(&agent, &job, attempt, summary_json, output)
                    .map(|changes| ((), changes)),
            ),
            Command::Fail {
                agent,
                job,
                attempt,
                reason,
                retryable,
                reply,
            } => answer(
                &mut store,
                reply,
                state.fail(&agent, &job, attempt, reason, retryable),
            ),
            Command::Submit {
                id,
                name,
                priority,
                specs,
                reply,
            } => answer(
                &mut store,
                reply,
                state.submit_sweep(id, name, priority, specs),
            ),
            Command::Cancel { sweep, reply } => {
                answer(&mut store, reply, state.cancel_sweep(&sweep))
            }
            Command::RetryFailed { sweep, reply } => {
                answer(&mut store, reply, state.retry_failed(&sweep))
            }
            Command::Counts { sweep, reply } => {
                let _ = reply.send(state.sweep_counts(&sweep).map_err(ServiceError::from));
                true
            }
            Command::LoseAgent { agent, reply } => {
                let changes = state.lose_agent(&agent);
                answer(&mut store, reply, Ok(((), changes)))
            }
            Command::Dataset {
                agent,
                dataset,
                reply,
            } => {
                // Only registered agents are served, like every other agent call; a lost agent
                // re-registers through its heartbeat and asks again.
                let result = state
                    .check_agent(&agent)
                    .and_then(|()| datasets.request(dataset, now));
                let _ = reply.send(result.map_err(ServiceError::from));
                true
            }
            Command::DatasetFetched { dataset, outcome } => {
                let changes = datasets.finished(dataset, outcome, now);
                persist(&mut store, changes).is_ok()
            }
            Command::Datasets { reply } => {
                let _ = reply.send(datasets.views());
                true
            }
            Command::Inspect { inspect } => {
                inspect(&state, &store, now);
                true
            }
            Command::Stop => return,
        };
        if !healthy {
            return;
        }
    }
}

impl CoordinatorHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ServiceError> {
        let (reply, response) = oneshot::channel();
        self.sender
            .send(make(reply))
            .map_err(|_| ServiceError::ShuttingDown)?;
        response.await.map_err(|_| ServiceError::ShuttingDown)?
    }

    pub async fn register(
        &self,
        capabilities: AgentCapabilities,
        previous: Option<AgentId>,
        running: Vec<(JobId, u32)>,
    ) -> Result<(AgentId, Vec<(JobId, u32)>), ServiceError> {
        self.call(|reply| Command::Register {
            capabilities,
            previous,
            running,
            reply,
        })
        .await
    }

    pub async fn heartbeat(
        &self,
        agent: AgentId,
        running: Vec<(JobId, u32)>,
    ) -> Result<Vec<(JobId, u32)>, ServiceError> {
        self.call(|reply| Command::Heartbeat {
            agent,
            running,
            reply,
        })
        .await
    }

    pub async fn lease(
        &self,
        agent: AgentId,
        slot: u32,
    ) -> Result<Option<LeaseGrant>, ServiceError> {
        self.call(|reply| Command::Lease { agent, slot, reply })
            .await
    }

    pub async fn report_metrics(
        &self,
        agent: AgentId,
        job: JobId,
        attempt: u32,
        lifetime: u32,
        metrics_json: String,
        checkpoint: Option<ArtifactHash>,
    ) -> Result<bool, ServiceError> {
        self.call(|reply| Command::Metrics {
            agent,
            job,
            attempt,
            lifetime,
            metrics_json,
            checkpoint,
            reply,
        })
        .await
    }

    pub async fn complete(
        &self,
        agent: AgentId,
        job: JobId,
        attempt: u32,
        summary_json: String,
        output: Option<ArtifactHash>,
    ) -> Result<(), ServiceError> {
        self.call(|reply| Command::Complete {
            agent,
            job,
            attempt,
            summary_json,
            output,
            reply,
        })
        .await
    }

    pub async fn fail(
        &self,
        agent: AgentId,
        job: JobId,
        attempt: u32,
        reason: String,
        retryable: bool,
    ) -> Result<bool, ServiceError> {
        self.call(|reply| Command::Fail {
            agent,
            job,
            attempt,
            reason,
            retryable,
            reply,
        })
        .await
    }

    pub async fn submit(
        &self,
        id: SweepId,
        name: String,
        priority: i32,
        specs: Vec<JobSpec>,
    ) -> Result<Submitted, ServiceError> {
        self.call(|reply| Command::Submit {
            id,
            name,
            priority,
            specs,
            reply,
        })
        .await
    }

    pub async fn cancel(&self, sweep: SweepId) -> Result<u32, ServiceError> {
        self.call(|reply| Command::Cancel { sweep, reply }).await
    }

    /// Queues the sweep's failed jobs again; how many.
    pub async fn retry_failed(&self, sweep: SweepId) -> Result<u32, ServiceError> {
        self.call(|reply| Command::RetryFailed { sweep, reply })
            .await
    }

    pub async fn counts(&self, sweep: SweepId) -> Result<SweepCounts, ServiceError> {
        self.call(|reply| Command::Counts { sweep, reply }).await
    }

    /// Which artifact holds `dataset`'s archive (starting its fetch if needed), for the
    /// registered `agent`.
    pub async fn dataset(
        &self,
        agent: AgentId,
        dataset: DatasetKind,
    ) -> Result<DatasetReply, ServiceError> {
        self.call(|reply| Command::Dataset {
            agent,
            dataset,
            reply,
        })
        .await
    }

    /// The datasets served, being fetched, or failed.
    pub async fn datasets(&self) -> Result<Vec<DatasetView>, ServiceError> {
        let (reply, response) = oneshot::channel();
        self.sender
            .send(Command::Datasets { reply })
            .map_err(|_| ServiceError::ShuttingDown)?;
        response.await.map_err(|_| ServiceError::ShuttingDown)
    }

    /// Gives up on an agent now (tests and operators; the timer does it after the agent timeout).
    pub async fn lose_agent(&self, agent: AgentId) -> Result<(), ServiceError> {
        self.call(|reply| Command::LoseAgent { agent, reply }).await
    }

    /// Runs `inspect` on the loop's thread with read access to the state and the store.
    pub async fn inspect<T: Send + 'static>(
        &self,
        inspect: impl FnOnce(&ClusterState, &Store) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        self.inspect_at(move |state, store, _| inspect(state, store))
            .await
    }

    /// [`CoordinatorHandle::inspect`], also given the loop's clock reading (Unix ms).
    pub async fn inspect_at<T: Send + 'static>(
        &self,
        inspect: impl FnOnce(&ClusterState, &Store, u64) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let (reply, response) = oneshot::channel();
        let command = Command::Inspect {
            inspect: Box::new(move |state, store, now| {
                let _ = reply.send(inspect(state, store, now));
            }),
        };
        self.sender
            .send(command)
            .map_err(|_| ServiceError::ShuttingDown)?;
        response.await.map_err(|_| ServiceError::ShuttingDown)
    }

    /// Stops the loop after the commands already sent.
    pub fn stop(&self) {
        let _ = self.sender.send(Command::Stop);
    }
}
