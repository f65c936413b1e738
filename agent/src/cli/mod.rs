//! The `ndhtl` command line.

pub mod bench_cmd;
pub mod cluster_cmd;
pub mod data_cmd;
pub mod progress;
pub mod report_cmd;
pub mod sweep_cmd;
pub mod train_cmd;

use clap::{Parser, Subcommand};

/// What the user can do about an error, added as its outermost context
/// (`error.context(Hint(..))`); `main` writes it on a line of its own after the error.
#[derive(Debug)]
pub struct Hint(pub String);

impl std::fmt::Display for Hint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Version line: the crate version and the backends compiled in.
pub fn long_version() -> &'static str {
    let backends: Vec<&str> = ndhtl_agent::device::compiled_backends()
        .iter()
        .map(|b| b.as_str())
        .collect();
    let text = format!(
        "{} (backends: {}; burn 0.22.1{})",
        env!("CARGO_PKG_VERSION"),
        backends.join(", "),
        match (
            option_env!("NDHTL_LIBTORCH_VERSION"),
            option_env!("NDHTL_LIBTORCH_CUDA"),
        ) {
            (Some(torch), Some(cuda)) =>
                format!("; libtorch {torch} with CUDA {cuda} via burn-tch"),
            (Some(torch), None) => format!("; libtorch {torch}, CPU only, via burn-tch"),
            _ if cfg!(feature = "tch") => "; libtorch via burn-tch".to_string(),
            _ => String::new(),
        }
    );
    Box::leak(text.into_boxed_str())
}

/// ndhtl: Neuromodulated Dopamine Hebbian Transfer Learning (Magotra & Kim, Symmetry 2021),
/// reproduced and explored on Burn.
///
/// A CIFAR AlexNet trained on CIFAR-10 is fine-tuned on CIFAR-100 target tasks T1..T10, either by
/// standard transfer learning (STL) or with a plastic output layer whose Hebbian trace is gated by
/// a learned dopamine-like signal, backpropagating only every K steps.
#[derive(Debug, Parser)]
#[command(name = "ndhtl", version = long_version(), propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// CPU threads for tensor kernels: the flex backend's pool (RAYON_NUM_THREADS) and
    /// libtorch's intra-op threads. Default: all cores.
    #[arg(long, global = true, env = "NDHTL_THREADS")]
    pub threads: Option<usize>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a sweep here: a coordinator and N local agents in one process, with progress bars,
    /// ending with the results table (the main command).
    Run(sweep_cmd::RunArgs),
    /// Check and expand a sweep without running it: job count, sample, reuse, compute.
    Plan(sweep_cmd::PlanArgs),
    /// Submit a sweep to a coordinator.
    Submit(sweep_cmd::SubmitArgs),
    /// Show sweeps, agents and failures (`--watch` to follow).
    Status(sweep_cmd::StatusArgs),
    /// Cancel a sweep's unfinished jobs.
    Cancel(sweep_cmd::CancelArgs),
    /// Reports on a sweep, also while it runs: Table 3, grids, best configurations, figures.
    Report(report_cmd::ReportArgs),
    /// Prepare data: download the official CIFAR archives, or generate synthetic data.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Train one job on this machine: the source model, or one STL/NDHTL fine-tune.
    #[command(subcommand)]
    Train(train_cmd::TrainCommand),
    /// Write a model as safetensors with PyTorch's names (features.N.*, classifier.*).
    Export(train_cmd::ExportArgs),
    /// Measure training and inference throughput, beside PyTorch when it is installed.
    Bench(bench_cmd::BenchArgs),
    /// Run the coordinator: sweeps, jobs, leases and results over gRPC, state in SQLite.
    Coordinator(ndhtl_coordinator::service::cli::CoordinatorArgs),
    /// Run an agent: lease jobs from the coordinator and train them on this machine.
    Agent(cluster_cmd::AgentArgs),
}
