//! `ndhtl-coordinator`: the coordinator alone, built without Burn or libtorch, for the small
//! coordinator image. `ndhtl coordinator` runs the same code.

use clap::Parser;
use ndhtl_coordinator::service::run::{run_coordinator, termination_signal};

/// ndhtl's coordinator: owns sweeps and jobs, leases them to agents over gRPC, keeps results.
#[derive(Debug, Parser)]
#[command(name = "ndhtl-coordinator", version)]
struct Args {
    #[command(flatten)]
    options: ndhtl_coordinator::service::cli::CoordinatorArgs,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NDHTL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(error) = run_coordinator(args.options.into_options(), termination_signal()).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
