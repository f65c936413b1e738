//! The `ndhtl` binary.

mod cli;

use std::io::IsTerminal;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, LogFormat};

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("NDHTL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Applies a process setting read from the environment, or exits with its error (status 2).
fn apply_or_exit(applied: Result<(), impl std::fmt::Display>) {
    if let Err(error) = applied {
        eprintln!("error: {error}");
        std::process::exit(2);
    }
}

fn main() {
    // Before any thread starts and any tensor is allocated.
    let allocator = ndhtl_agent::allocator::keep_freed_memory_for_reuse();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Err(reason) = allocator {
        tracing::debug!(%reason, "malloc left at its settings");
    }
    apply_or_exit(
        ndhtl_agent::model::conv::ConvolutionGradients::from_environment().map(|setting| {
            setting.apply();
        }),
    );
    apply_or_exit(
        ndhtl_agent::model::softmax::SoftmaxKernels::from_environment().map(|setting| {
            setting.apply();
        }),
    );
    apply_or_exit(
        ndhtl_agent::train::optimizer::SgdKernel::from_environment().map(|setting| {
            setting.apply();
        }),
    );
    apply_or_exit(
        ndhtl_agent::upload::HostUploads::from_environment().map(|setting| {
            setting.apply();
        }),
    );
    if let Some(threads) = cli.threads {
        // Read by the flex backend's thread pool when it first starts.
        // SAFETY: single-threaded at this point; nothing else reads the environment yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
        // libtorch's intra-op threads too: without this a `tch` bench with `--threads 1` ran
        // libtorch on every core beside a one-thread PyTorch reference.
        #[cfg(feature = "tch")]
        tch::set_num_threads(i32::try_from(threads.max(1)).unwrap_or(i32::MAX));
    }
    if let Err(error) = run(cli.command) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Run(args) => cli::sweep_cmd::run(args),
        Command::Plan(args) => cli::sweep_cmd::plan(args),
        Command::Submit(args) => cli::sweep_cmd::submit(args),
        Command::Status(args) => cli::sweep_cmd::status(args),
        Command::Cancel(args) => cli::sweep_cmd::cancel(args),
        Command::Report(args) => cli::report_cmd::report(args),
        Command::Data(command) => cli::data_cmd::run(command),
        Command::Train(command) => cli::train_cmd::run(command),
        Command::Export(args) => cli::train_cmd::export(args),
        Command::Bench(args) => cli::bench_cmd::run(args),
        Command::Coordinator(args) => cli::cluster_cmd::coordinator(args),
        Command::Agent(args) => cli::cluster_cmd::agent(args),
    }
}
