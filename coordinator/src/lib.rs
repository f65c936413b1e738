//! ndhtl's coordinator: it owns sweeps and jobs, leases jobs to agents, and keeps results.
//! It builds without Burn.
//!
//! - [`domain`]: jobs, sweeps, agents, leases;
//! - [`state`]: the pure state machine (no I/O, virtual clock) that every event goes through;
//! - [`store`]: the SQLite state database and the artifact folder;
//! - [`datasets`]: the CIFAR archives the coordinator fetches once and serves to agents;
//! - [`service`]: the event loop, the gRPC API and the server;
//! - [`error`]: the service's one error enum.

pub mod datasets;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod service;
pub mod state;
pub mod store;

/// The coordinator's version; agents must match its major.minor.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
