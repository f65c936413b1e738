//! `ndhtl report`: the coordinator computes a report (Table 3, a grid, the best
//! configurations) and this prints or saves it; with `--out-dir`, every report in every format
//! and the figures are written into a folder. With `--state-dir` the same reports are computed
//! here from a state folder's database, with no coordinator running (after `ndhtl run`, or on a
//! copy of a cluster's state).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use ndhtl_agent::report_bundle::{BundleOptions, write_report_bundle};
use ndhtl_coordinator::error::CoordinatorError;
use ndhtl_coordinator::service::convert::report_request_to_proto;
use ndhtl_coordinator::service::event_loop::ServiceError;
use ndhtl_coordinator::service::sweep_api::{outcomes_of_results, stored_job_results};
use ndhtl_coordinator::store::Store;
use ndhtl_core::report::{
    FinetuneOutcome, GridSpec, LifetimeView, Metric, ReportFormat, ReportKind, ReportRequest,
    progress, render,
};
use ndhtl_proto::v1;
use ndhtl_proto::v1::sweep_service_client::SweepServiceClient;
use tonic::transport::Channel;

use super::Hint;
use super::sweep_cmd::{ClientArgs, connect, runtime};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The sweep: its id (as `ndhtl run`, `submit` and `status` print it), its name (the latest
    /// sweep of that name), or a prefix only its id has.
    pub sweep: String,
    /// A grid over two parameters instead of Table 3, e.g. `--grid eta,k`.
    #[arg(long, value_name = "ROWS,COLS", conflicts_with = "best")]
    pub grid: Option<String>,
    /// The best configuration per target and over all targets instead of Table 3.
    #[arg(long)]
    pub best: bool,
    /// What grids and best-configuration reports compare.
    #[arg(long, value_enum, default_value = "top1")]
    pub metric: Metric,
    /// Grids: parameters pooled into each cell's mean ± std (default: seed).
    #[arg(long, value_delimiter = ',')]
    pub pool: Vec<String>,
    /// Grids: only jobs with this parameter value, e.g. `--where clip=1` (repeatable).
    #[arg(long = "where", value_name = "NAME=VALUE")]
    pub filters: Vec<String>,
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: ReportFormat,
    /// Final lifetime (default) or best lifetime (spec D-16).
    #[arg(long, value_enum, default_value = "final")]
    pub view: LifetimeView,
    /// Write the report here instead of printing it.
    #[arg(long, conflicts_with = "out_dir")]
    pub out: Option<PathBuf>,
    /// Write every report in every format, and the figures (SVG and PNG), into this folder.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Read the results from this coordinator state folder instead of asking a coordinator:
    /// `ndhtl run`'s `ndhtl-run`, a coordinator's `--state-dir`, or a copy of one. Works beside
    /// a running coordinator too. Given, `--coordinator` is not used.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl ReportArgs {
    fn grid_spec(&self) -> Result<Option<GridSpec>> {
        let Some(axes) = &self.grid else {
            return Ok(None);
        };
        let Some((rows, cols)) = axes.split_once(',') else {
            bail!("--grid takes two parameters, ROWS,COLS (e.g. --grid eta,k), not `{axes}`");
        };
        let mut spec = GridSpec::new(rows.trim(), cols.trim());
        if !self.pool.is_empty() {
            spec.pool = self.pool.clone();
        }
        spec.filters = self
            .filters
            .iter()
            .map(|filter| GridSpec::parse_filter(filter))
            .collect::<Result<_, _>>()?;
        Ok(Some(spec))
    }

    fn request(&self) -> Result<ReportRequest> {
        let kind = match self.grid_spec()? {
            Some(spec) => ReportKind::Grid(spec),
            None if self.best => ReportKind::Best,
            None => ReportKind::Table3,
        };
        Ok(ReportRequest {
            kind,
            metric: self.metric,
            view: self.view,
            format: self.format,
        })
    }
}

/// Every fine-tune outcome of a sweep, as the coordinator stores them.
pub(crate) async fn fetch_outcomes(
    client: &mut SweepServiceClient<Channel>,
    sweep: &str,
) -> Result<Vec<FinetuneOutcome>> {
    Ok(fetch_sweep_outcomes(client, sweep).await?.1)
}

/// The outcomes of the sweep `wanted` names (an id, a name or an id prefix), with its id.
async fn fetch_sweep_outcomes(
    client: &mut SweepServiceClient<Channel>,
    wanted: &str,
) -> Result<(String, Vec<FinetuneOutcome>)> {
    let response = client
        .fetch_results(v1::FetchResultsRequest {
            sweep_id: wanted.to_string(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    Ok((response.sweep_id, outcomes_of_results(&response.jobs)?))
}

/// Says which sweep a name or an id prefix was taken for (on stderr, beside the report).
fn note_the_sweep_found(wanted: &str, found: &str) {
    if !found.is_empty() && wanted != found {
        eprintln!("note: `{wanted}` is sweep {found}");
    }
}

pub fn report(args: ReportArgs) -> Result<()> {
    let request = args.request()?;
    if let Some(state_dir) = &args.state_dir {
        return report_from_state_dir(&args, &request, state_dir);
    }
    runtime()?.block_on(async {
        let mut client = connect(&args.client.coordinator).await.map_err(|error| {
            error.context(Hint(format!(
                "with no coordinator up, report from the sweep's state folder: ndhtl report {} --state-dir DIR (`ndhtl run` keeps it in ndhtl-run)",
                args.sweep
            )))
        })?;
        if let Some(dir) = &args.out_dir {
            let (sweep, outcomes) = fetch_sweep_outcomes(&mut client, &args.sweep).await?;
            note_the_sweep_found(&args.sweep, &sweep);
            return write_bundle(&args, &outcomes, dir);
        }
        let response = client
            .get_report(report_request_to_proto(&args.sweep, &request))
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        note_the_sweep_found(&args.sweep, &response.sweep_id);
        emit(
            &args,
            &response.text,
            response.finished_jobs as usize,
            response.total_jobs as usize,
        )
    })
}

/// `--state-dir`: the coordinator's own computation (the results `FetchResults` would return,
/// then the same rendering), on the folder's database.
fn report_from_state_dir(
    args: &ReportArgs,
    request: &ReportRequest,
    state_dir: &Path,
) -> Result<()> {
    let store = Store::open_for_reading(state_dir)?;
    let jobs = match stored_job_results(&store, &args.sweep) {
        Ok((sweep, jobs)) => {
            note_the_sweep_found(&args.sweep, &sweep);
            jobs
        }
        Err(ServiceError::Coordinator(CoordinatorError::UnknownSweep(sweep))) => {
            let sweeps: Vec<String> = store
                .load()?
                .sweeps
                .into_iter()
                .map(|sweep| format!("{} ({}, {} jobs)", sweep.id, sweep.name, sweep.jobs.len()))
                .collect();
            let known = if sweeps.is_empty() {
                "none".to_string()
            } else {
                sweeps.join(", ")
            };
            bail!(
                "no sweep `{sweep}` in {}; its sweeps: {known}",
                state_dir.display()
            );
        }
        Err(error) => return Err(error.into()),
    };
    let outcomes = outcomes_of_results(&jobs)?;
    if let Some(dir) = &args.out_dir {
        return write_bundle(args, &outcomes, dir);
    }
    let (finished, total) = progress(&outcomes);
    let text = render(&outcomes, request)?;
    emit(args, &text, finished, total)
}

/// `--out-dir`: every report in every format, and the figures.
fn write_bundle(args: &ReportArgs, outcomes: &[FinetuneOutcome], dir: &Path) -> Result<()> {
    let options = BundleOptions {
        view: args.view,
        metric: args.metric,
        grid: args.grid_spec()?,
    };
    let written = write_report_bundle(outcomes, dir, &options)
        .with_context(|| format!("writing the reports into {}", dir.display()))?;
    for path in &written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Prints the report (or writes it to `--out`), with a note when it covers part of the sweep.
fn emit(args: &ReportArgs, text: &str, finished: usize, total: usize) -> Result<()> {
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    if finished < total {
        eprintln!("note: {finished} of {total} jobs finished; the report covers the finished ones");
    }
    Ok(())
}
