//! ndhtl's shared domain, used by the coordinator (which builds without Burn) and the agents:
//!
//! - [`config`]: the canonical job configurations (source training, STL/NDHTL fine-tuning) with
//!   the spec's defaults and their validation;
//! - [`plastic`]: the settings of the plastic layer and the loss;
//! - [`metrics`]: the per-lifetime records and run summaries jobs report;
//! - [`ids`]: content-derived ids of job configurations.

pub mod config;
pub mod ids;
pub mod metrics;
pub mod plastic;
