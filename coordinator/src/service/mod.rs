//! The coordinator as a service: the event loop, the gRPC API, and the server.

pub mod agent_api;
pub mod cli;
pub mod clock;
pub mod convert;
mod dataset_loop;
pub mod embedded;
pub use dataset_loop::{DatasetReply, DatasetView};
pub mod event_loop;
pub mod http;
pub mod run;
pub mod server;
pub mod sweep_api;

pub use clock::{Clock, ManualClock, SystemClock};
pub use embedded::{EmbeddedCoordinator, EmbeddedOptions};
pub use event_loop::{CoordinatorHandle, ServiceError, spawn_event_loop, spawn_event_loop_with};
