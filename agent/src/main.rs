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
        eprintln!("error: {}", error_chain(&error));
        if let Some(hint) = error.downcast_ref::<cli::Hint>() {
            eprintln!("hint: {hint}");
        }
        std::process::exit(1);
    }
}

/// An error and its causes on one line, outermost first, as `{:#}` writes them, less a cause
/// that only repeats the one before it (tonic's transport errors name "tcp connect error" twice)
/// and less a [`cli::Hint`], which `main` writes apart.
fn error_chain(error: &anyhow::Error) -> String {
    let hint = error
        .downcast_ref::<cli::Hint>()
        .map(|hint| hint.0.as_str());
    let mut messages: Vec<String> = Vec::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if messages.last() != Some(&message) && Some(message.as_str()) != hint {
            messages.push(message);
        }
    }
    messages.join(": ")
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

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Cause {
        message: &'static str,
        #[source]
        source: Option<Box<Cause>>,
    }

    fn cause(message: &'static str, source: Option<Cause>) -> Cause {
        Cause {
            message,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn a_cause_that_repeats_the_one_before_is_written_once() {
        let io = cause("Connection refused (os error 111)", None);
        let chain = cause(
            "transport error",
            Some(cause(
                "tcp connect error",
                Some(cause("tcp connect error", Some(io))),
            )),
        );
        let error = anyhow::Error::new(chain).context("cannot reach the coordinator at X");
        assert_eq!(
            error_chain(&error),
            "cannot reach the coordinator at X: transport error: tcp connect error: Connection refused (os error 111)"
        );
        // Only a repeat of the cause just before is dropped, as `{:#}` would write the rest.
        let apart = anyhow::Error::new(cause("a", Some(cause("b", Some(cause("a", None))))));
        assert_eq!(error_chain(&apart), format!("{apart:#}"));
        assert_eq!(error_chain(&apart), "a: b: a");

        // A hint is not part of the chain, wherever it stands: `main` writes it on its own line.
        let expected = error_chain(&error);
        let hinted = error.context(crate::cli::Hint("do this".into()));
        assert_eq!(
            hinted.downcast_ref::<crate::cli::Hint>().unwrap().0,
            "do this"
        );
        assert_eq!(error_chain(&hinted), expected);
        let wrapped = hinted.context("reporting");
        assert_eq!(error_chain(&wrapped), format!("reporting: {expected}"));
    }
}
