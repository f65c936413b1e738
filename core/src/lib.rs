//! ndhtl's shared domain, used by the coordinator (which builds without Burn) and the agents:
//!
//! - [`config`]: the canonical job configurations (source training, STL/NDHTL fine-tuning) with
//!   the spec's defaults and their validation;
//! - [`plastic`]: the settings of the plastic layer and the loss;
//! - [`metrics`]: the per-lifetime records and run summaries jobs report;
//! - [`dataset`]: which data a job trains on (real CIFAR or generated);
//! - [`task`]: transfer tasks (the paper's T1..T10 and custom class lists) and [`labels`], the
//!   official CIFAR class tables they are written in;
//! - [`archive`]: the official CIFAR archives and their verified, resumable download;
//! - [`sweep`]: the YAML sweep language, its validation and its expansion into jobs;
//! - [`report`]: Table 3 and other reports from a sweep's results;
//! - [`ids`]: content-derived ids of job configurations.

pub mod archive;
pub mod config;
pub mod dataset;
pub mod ids;
pub mod labels;
pub mod metrics;
pub mod plastic;
pub mod report;
pub mod sweep;
pub mod task;
