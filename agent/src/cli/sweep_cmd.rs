//! The sweep commands: `ndhtl plan`, `submit`, `status`, `cancel`, and `run` (a coordinator and
//! N local agents in one process, the main command). `report` is in `report_cmd`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ndhtl_agent::data::DatasetKind;
use ndhtl_agent::data::TaskSpec;
use ndhtl_agent::data::download::{
    OFFICIAL_BASE_URL, default_cache_dir, download_dataset, options_with_progress,
};
use ndhtl_agent::device::{BackendKind, DeviceSpec, build_info, slot_devices};
use ndhtl_agent::report_bundle::{BundleOptions, write_report_bundle};
use ndhtl_agent::runtime::runner::NdhtlRunner;
use ndhtl_agent::runtime::{AgentOptions, run_agent};
use ndhtl_coordinator::jobs::{jobs_of_plan, sweep_id};
use ndhtl_coordinator::service::{EmbeddedCoordinator, EmbeddedOptions};
use ndhtl_coordinator::state::Timing;
use ndhtl_coordinator::store::Store;

use super::Hint;
use super::report_cmd::fetch_outcomes;
use ndhtl_core::config::{FinetuneConfig, Method};
use ndhtl_core::report::{LifetimeView, table3};
use ndhtl_core::sweep::{DEFAULT_MAX_JOBS, SweepDefinition, SweepPlan, parse_sweep};
use ndhtl_proto::v1;
use ndhtl_proto::v1::sweep_service_client::SweepServiceClient;
use tonic::transport::Channel;

/// Parses, checks and expands a sweep file.
fn load_sweep(path: &Path, max_jobs: u64) -> Result<(SweepDefinition, SweepPlan, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading sweep file {}", path.display()))?;
    let name = path.display().to_string();
    let definition = parse_sweep(&text, &name)?;
    let plan = definition.expand(max_jobs)?;
    for warning in &plan.warnings {
        eprintln!("{warning}");
    }
    Ok((definition, plan, text))
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The sweep file.
    pub sweep: PathBuf,
    /// A coordinator state folder (its `--state-dir`; `ndhtl run` uses `ndhtl-run`): jobs
    /// already succeeded there are marked as reused.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Jobs listed as a sample.
    #[arg(long, default_value_t = 8)]
    pub sample: usize,
    /// Refuse sweeps implying more jobs than this (a sweep's `max_jobs` overrides it).
    #[arg(long, default_value_t = DEFAULT_MAX_JOBS)]
    pub max_jobs: u64,
    /// Also write every job as a JSON line here: id, kind, configuration, its dataset's class
    /// labels and the source job it needs (for other tools, such as the sequential PyTorch
    /// reproduction in agent/bench/pytorch_sweep.py).
    #[arg(long, value_name = "FILE")]
    pub export_jobs: Option<PathBuf>,
}

/// One job as `ndhtl plan --export-jobs` writes it.
fn exported_job(job: &ndhtl_coordinator::domain::JobSpec) -> Result<serde_json::Value> {
    let config: serde_json::Value = serde_json::from_str(&job.config_json)?;
    let task_name = config["task"].as_str().unwrap_or("cifar10").to_string();
    let task: TaskSpec = task_name
        .parse()
        .map_err(|error| anyhow::anyhow!("job {}: task {task_name}: {error}", job.id))?;
    Ok(serde_json::json!({
        "job_id": job.id,
        "kind": if job.depends_on.is_some() { "finetune" } else { "source" },
        "depends_on": job.depends_on,
        "dataset": task.dataset.as_str(),
        "classes": task.classes,
        "config": config,
    }))
}

/// Training images one fine-tune or source job processes, from its configuration: the
/// official CIFAR sizes, or the generated data's.
fn images_processed(plan: &SweepPlan) -> (f64, f64) {
    use ndhtl_core::dataset::Dataset;
    let (c10_per_class, c100_per_class) = match plan.dataset {
        Dataset::Cifar => (5000.0, 500.0),
        Dataset::Synthetic(s) => (
            s.cifar10_train_per_class as f64,
            s.cifar100_train_per_class as f64,
        ),
    };
    let source: f64 = plan
        .sources
        .iter()
        .map(|s| {
            let per_class = s
                .train_per_class
                .map_or(c10_per_class, |n| (n as f64).min(c10_per_class));
            s.epochs as f64 * per_class * 10.0
        })
        .sum();
    let finetune: f64 = plan
        .finetunes
        .iter()
        .map(|f| {
            let per_class = f
                .config
                .train_per_class
                .map_or(c100_per_class, |n| (n as f64).min(c100_per_class));
            f.config.lifetimes as f64 * per_class * 10.0
        })
        .sum();
    (source, finetune)
}

/// Measured on a 2-core Xeon with flex (README, "Benchmarks"): batch 128 and batch 1.
const FLEX_SOURCE_IMAGES_PER_SECOND: f64 = 365.0;
const FLEX_FINETUNE_IMAGES_PER_SECOND: f64 = 50.0;

pub fn plan(args: PlanArgs) -> Result<()> {
    let (_, plan, _) = load_sweep(&args.sweep, args.max_jobs)?;
    let jobs = jobs_of_plan(&plan);
    let id = sweep_id(&plan.name, &jobs);
    let done: std::collections::BTreeSet<String> = match &args.state_dir {
        Some(dir) => {
            let store = Store::open_for_reading(dir)?;
            store
                .load()?
                .jobs
                .into_iter()
                .filter(|job| job.state.name() == "succeeded")
                .map(|job| job.spec.id)
                .collect()
        }
        None => Default::default(),
    };
    let reused = jobs.iter().filter(|job| done.contains(&job.id)).count();
    if let Some(path) = &args.export_jobs {
        let mut lines = String::new();
        for job in &jobs {
            lines.push_str(&serde_json::to_string(&exported_job(job)?)?);
            lines.push('\n');
        }
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("sweep {} ({id})", plan.name);
    if let Some(description) = &plan.description {
        println!("  {}", description.trim());
    }
    println!(
        "jobs: {} ({} source, {} fine-tune); already in the store, reused: {reused}",
        jobs.len(),
        plan.sources.len(),
        plan.finetunes.len()
    );
    println!("data: {}", plan.dataset.label());
    let (source_images, finetune_images) = images_processed(&plan);
    println!(
        "compute: {:.3e} source + {:.3e} fine-tune training images; about {:.1} CPU-core-pair hours at the measured flex rates ({FLEX_SOURCE_IMAGES_PER_SECOND} img/s at batch 128, {FLEX_FINETUNE_IMAGES_PER_SECOND} img/s at batch 1; a GPU is far faster)",
        source_images,
        finetune_images,
        (source_images / FLEX_SOURCE_IMAGES_PER_SECOND
            + finetune_images / FLEX_FINETUNE_IMAGES_PER_SECOND)
            / 3600.0
    );
    println!("\n| job | kind | target | method | seed | lifetimes | K | η | clip | lr | reused |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for job in jobs.iter().take(args.sample) {
        let reused = if done.contains(&job.id) { "yes" } else { "" };
        match serde_json::from_str::<FinetuneConfig>(&job.config_json) {
            Ok(c) if job.depends_on.is_some() => println!(
                "| {} | fine-tune | {} | {} | {} | {} | {} | {} | {} | {} | {reused} |",
                &job.id[..12],
                c.task,
                c.method.as_str(),
                c.seed,
                c.lifetimes,
                if c.method == Method::Ndhtl {
                    c.k.to_string()
                } else {
                    "—".into()
                },
                if c.method == Method::Ndhtl {
                    c.eta.to_string()
                } else {
                    "—".into()
                },
                if c.method == Method::Ndhtl {
                    c.plastic.clip.to_string()
                } else {
                    "—".into()
                },
                c.lr
            ),
            _ => println!("| {} | source | | | | | | | | | {reused} |", &job.id[..12]),
        }
    }
    if jobs.len() > args.sample {
        println!(
            "| … {} more | | | | | | | | | | |",
            jobs.len() - args.sample
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The coordinator's gRPC address.
    #[arg(
        long,
        env = "NDHTL_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    pub coordinator: String,
}

pub(crate) async fn connect(address: &str) -> Result<SweepServiceClient<Channel>> {
    let channel = Channel::from_shared(address.to_string())
        .with_context(|| format!("invalid coordinator address `{address}`"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {address}"))?;
    Ok(SweepServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    pub sweep: PathBuf,
    /// Overrides the sweep's priority (higher runs first).
    #[arg(long)]
    pub priority: Option<i32>,
    /// Then wait for the sweep to finish, logging its progress; exit 1 if any job failed.
    /// Rides out coordinator restarts (it reconnects).
    #[arg(long)]
    pub wait: bool,
    /// Seconds between progress checks with `--wait`.
    #[arg(long, default_value_t = 15)]
    pub poll_secs: u64,
    /// If this sweep was submitted before, run its failed jobs again (a failed job is otherwise
    /// final): each as a new attempt, resuming from its last checkpoint, with a fresh budget of
    /// retries.
    #[arg(long)]
    pub retry_failed: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Polls a sweep until every job has finished; fails if any failed. Connection errors (a
/// coordinator restarting) are retried.
async fn wait_for_sweep(address: &str, sweep: &str, poll: Duration) -> Result<()> {
    let mut last_logged = None;
    loop {
        let status = match connect(address).await {
            Ok(mut client) => client
                .get_status(v1::GetStatusRequest {
                    sweep_id: sweep.to_string(),
                })
                .await
                .map(|response| response.into_inner())
                .map_err(|status| anyhow::anyhow!("{}", status.message())),
            Err(error) => Err(error),
        };
        match status.map(|s| s.sweeps.into_iter().find(|s| s.sweep_id == sweep)) {
            Ok(Some(progress)) => {
                let finished = progress.succeeded + progress.failed + progress.cancelled;
                let total = finished + progress.queued + progress.running;
                if last_logged != Some(finished) {
                    tracing::info!(
                        sweep,
                        finished,
                        total,
                        running = progress.running,
                        failed = progress.failed,
                        "sweep progress"
                    );
                    last_logged = Some(finished);
                }
                if progress.queued + progress.running == 0 {
                    if progress.failed > 0 {
                        let error = anyhow::anyhow!(
                            "sweep {sweep}: {} of {total} jobs failed (`ndhtl status {sweep}` lists them with their errors)",
                            progress.failed
                        );
                        return Err(error.context(Hint(
                            "once a failure's cause is gone, `ndhtl submit SWEEP.yaml --retry-failed` runs the failed jobs again".into(),
                        )));
                    }
                    println!("sweep {sweep}: {finished}/{total} jobs finished");
                    return Ok(());
                }
            }
            Ok(None) => bail!("the coordinator does not know sweep {sweep}"),
            Err(error) => {
                tracing::warn!(%error, "cannot read the sweep's progress; retrying");
            }
        }
        tokio::time::sleep(poll).await;
    }
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    // Checked here first (the coordinator checks again): an error names the local file and
    // nothing is sent.
    let (_, plan, text) = load_sweep(&args.sweep, u64::MAX)?;
    runtime()?.block_on(async {
        let mut client = connect(&args.client.coordinator).await?;
        let response = client
            .submit_sweep(v1::SubmitSweepRequest {
                yaml: text,
                file_name: args.sweep.display().to_string(),
                priority: args.priority.unwrap_or(plan.priority),
                retry_failed: args.retry_failed,
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        println!(
            "{}\t{} jobs ({} reused{})",
            response.sweep_id,
            response.jobs,
            response.reused,
            if args.retry_failed {
                format!(", {} failed queued again", response.retried)
            } else {
                String::new()
            }
        );
        if args.wait {
            wait_for_sweep(
                &args.client.coordinator,
                &response.sweep_id,
                Duration::from_secs(args.poll_secs.max(1)),
            )
            .await?;
        }
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One sweep (default: every sweep): its id, its name (the latest sweep of that name), or a
    /// prefix only its id has.
    pub sweep: Option<String>,
    /// Redraw every two seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn status_table(status: &v1::GetStatusResponse) -> String {
    let mut out = String::from(
        "| sweep | name | prio | done | queued | running | succeeded | failed | cancelled |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for sweep in &status.sweeps {
        let total = sweep.queued + sweep.running + sweep.succeeded + sweep.failed + sweep.cancelled;
        let finished = sweep.succeeded + sweep.failed + sweep.cancelled;
        out.push_str(&format!(
            "| {} | {} | {} | {}/{} ({:.0}%) | {} | {} | {} | {} | {} |\n",
            sweep.sweep_id,
            sweep.name,
            sweep.priority,
            finished,
            total,
            100.0 * finished as f64 / total.max(1) as f64,
            sweep.queued,
            sweep.running,
            sweep.succeeded,
            sweep.failed,
            sweep.cancelled
        ));
    }
    out.push_str(
        "\n| agent | host | backend | slots | running | last seen |\n|---|---|---|---|---|---|\n",
    );
    for agent in &status.agents {
        let capabilities = agent.capabilities.clone().unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} s ago |\n",
            agent.agent_id,
            capabilities.hostname,
            capabilities.backend,
            capabilities.slots,
            agent.running,
            agent.last_seen_ms_ago as f64 / 1000.0
        ));
    }
    if !status.datasets.is_empty() {
        out.push_str("\n| dataset served | state | MB | detail |\n|---|---|---|---|\n");
        for dataset in &status.datasets {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {} |\n",
                dataset.dataset,
                dataset.state,
                dataset.bytes as f64 / 1e6,
                dataset.detail
            ));
        }
    }
    for sweep in &status.sweeps {
        if sweep.failures.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{}:\n", sweep.sweep_id));
        for failure in &sweep.failures {
            out.push_str(&failure_line(failure));
            out.push('\n');
        }
    }
    out
}

pub fn status(args: StatusArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.client.coordinator).await?;
        loop {
            let status = client
                .get_status(v1::GetStatusRequest {
                    sweep_id: args.sweep.clone().unwrap_or_default(),
                })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?
                .into_inner();
            if args.watch {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", status_table(&status));
            if !args.watch {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The sweep: its id, or a prefix of it that no other sweep's id has, or its name if no
    /// other sweep has that name.
    pub sweep: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn cancel(args: CancelArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.client.coordinator).await?;
        let response = client
            .cancel_sweep(v1::CancelSweepRequest {
                sweep_id: args.sweep.clone(),
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        println!(
            "{}: {} job{} cancelled",
            response.sweep_id,
            response.cancelled,
            if response.cancelled == 1 { "" } else { "s" }
        );
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sweep file.
    pub sweep: PathBuf,
    /// Local agents (one job each at a time), sharing the CPU cores; on `--device cuda`, agent
    /// i runs on GPU i mod the GPU count, so several agents share a GPU.
    #[arg(long, default_value_t = 2)]
    pub agents: u32,
    /// The coordinator's state (database, artifacts); rerunning resumes and reuses results.
    #[arg(long, default_value = "ndhtl-run")]
    pub state_dir: PathBuf,
    /// Device of the local agents (`cpu`, `cuda`, `cuda:N`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Backend of the local agents (default: flex on the CPU, tch on a GPU).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Refuse sweeps implying more jobs than this (a sweep's `max_jobs` overrides it).
    #[arg(long, default_value_t = DEFAULT_MAX_JOBS)]
    pub max_jobs: u64,
    /// Also serve the coordinator's gRPC API here (for `ndhtl status` from another terminal).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Run the failed jobs of an earlier run of this sweep again (a failed job is otherwise
    /// final, and a rerun only reports it): each as a new attempt, resuming from its last
    /// checkpoint.
    #[arg(long)]
    pub retry_failed: bool,
}

/// The data folder local agents use, downloading the official archives first if the sweep
/// asks for it.
fn prepare_data(plan: &SweepPlan) -> Result<PathBuf> {
    let Some(cifar) = plan.data.as_ref().and_then(|data| data.cifar.clone()) else {
        return Ok(PathBuf::from("data"));
    };
    let dir = cifar.dir.unwrap_or_else(|| PathBuf::from("data"));
    if cifar.download {
        let options = options_with_progress(default_cache_dir());
        for dataset in [DatasetKind::Cifar10, DatasetKind::Cifar100] {
            download_dataset(dataset, OFFICIAL_BASE_URL, &dir, &options)
                .with_context(|| format!("downloading {dataset} into {}", dir.display()))?;
        }
    }
    Ok(dir)
}

pub fn run(args: RunArgs) -> Result<()> {
    let (_, plan, text) = load_sweep(&args.sweep, args.max_jobs)?;
    let data_dir = prepare_data(&plan)?;
    let agents = args.agents.max(1);
    let spec: DeviceSpec = args.device.parse()?;
    let backend = args.backend.unwrap_or(match spec {
        DeviceSpec::Cpu => BackendKind::Flex,
        DeviceSpec::Cuda(_) => BackendKind::Tch,
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads_per_agent = (cores / agents as usize).max(1);
    tracing::info!(sweep = %plan.name, jobs = plan.job_count(), agents, threads_per_agent, build = %build_info(), "ndhtl run");
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;

    runtime()?.block_on(async move {
        let timing = Timing {
            heartbeat_interval_ms: 1_000,
            lease_timeout_ms: 30_000,
            agent_timeout_ms: 60_000,
            max_attempts: 3,
        };
        let coordinator = EmbeddedCoordinator::start(EmbeddedOptions::grpc_only(
            &args.state_dir,
            args.listen,
            timing,
        ))
        .await
        .with_context(|| format!("starting the coordinator over {}", args.state_dir.display()))?;
        let address = coordinator.address();
        tracing::info!(%address, "coordinator serving (ndhtl status --coordinator http://{address})");

        let (stop_agents, agents_stopped) = tokio::sync::watch::channel(false);
        // The devices agents are spread over: the CPU, or each GPU once.
        let agent_devices = slot_devices(spec, 1)?;
        let mut agent_tasks = Vec::new();
        for index in 0..agents {
            let options = AgentOptions {
                coordinator: format!("http://{address}"),
                slot_devices: vec![agent_devices[index as usize % agent_devices.len()]],
                threads_per_slot: Some(threads_per_agent),
                backend,
                data_dir: data_dir.clone(),
                work_dir: args.state_dir.join(format!("agent-{index}")),
                hostname: format!("local-{index}"),
                idle_poll: Duration::from_millis(200),
                duplicate_reports: false,
                dataset_poll: Duration::from_secs(1),
                dataset_wait: Duration::from_secs(5),
            };
            let runner = Arc::new(NdhtlRunner {
                data_dir: data_dir.clone(),
                generated_data_dir: args.state_dir.join("data"),
                backend: Some(backend),
            });
            let stopped = agents_stopped.clone();
            agent_tasks.push(tokio::spawn(async move { run_agent(options, runner, stopped).await }));
        }

        let mut client = connect(&format!("http://{address}")).await?;
        let submitted = client
            .submit_sweep(v1::SubmitSweepRequest {
                yaml: text,
                file_name: args.sweep.display().to_string(),
                priority: plan.priority,
                retry_failed: args.retry_failed,
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        let sweep = submitted.sweep_id.clone();
        let bar = ProgressBar::new(submitted.jobs as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} jobs {msg}",
            )
            .expect("progress template"),
        );
        bar.set_prefix(plan.name.clone());
        let mut interrupted = Box::pin(ndhtl_coordinator::service::run::termination_signal());
        let status = loop {
            let status = client
                .get_status(v1::GetStatusRequest {
                    sweep_id: sweep.clone(),
                })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?
                .into_inner();
            let sweep_status = status.sweeps.first().cloned().unwrap_or_default();
            let finished = sweep_status.succeeded + sweep_status.failed + sweep_status.cancelled;
            bar.set_position(finished as u64);
            bar.set_message(format!(
                "({} running, {} queued, {} failed)",
                sweep_status.running, sweep_status.queued, sweep_status.failed
            ));
            if sweep_status.queued == 0 && sweep_status.running == 0 {
                break sweep_status;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = &mut interrupted => {
                    bar.abandon_with_message("interrupted: rerun the same command to resume");
                    break sweep_status;
                }
            }
        };
        bar.finish();
        let outcomes = fetch_outcomes(&mut client, &sweep).await?;
        let _ = stop_agents.send(true);
        for task in agent_tasks {
            let _ = task.await;
        }
        if let Err(error) = coordinator.shutdown().await {
            // Every answered call is already stored, and the outcomes are in hand.
            tracing::warn!(%error, "the coordinator did not stop cleanly");
        }

        let report_dir = args.state_dir.join("reports").join(&sweep);
        let written = write_report_bundle(&outcomes, &report_dir, &BundleOptions::default())
            .with_context(|| format!("writing the reports into {}", report_dir.display()))?;
        let retried = if args.retry_failed {
            format!(", {} failed before and run again", submitted.retried)
        } else {
            String::new()
        };
        println!(
            "\nsweep {sweep}: {} succeeded, {} failed, {} cancelled ({} reused from earlier runs{retried})\n",
            status.succeeded, status.failed, status.cancelled, submitted.reused
        );
        for failure in &status.failures {
            println!("{}", failure_line(failure));
        }
        print!("{}", table3(&outcomes, LifetimeView::Final).to_markdown());
        println!(
            "\nreports: {} ({} files: tables in markdown, CSV, JSON and LaTeX; figures in plots/)",
            report_dir.display(),
            written.len()
        );
        println!(
            "others (a grid, the best configurations, another format): ndhtl report {sweep} --state-dir {} --grid ROWS,COLS | --best | --format latex",
            args.state_dir.display()
        );
        if status.failed > 0 {
            let error = anyhow::anyhow!(
                "{} of {} job{} failed (`failed:` above); the others' results are reported",
                status.failed,
                submitted.jobs,
                if submitted.jobs == 1 { "" } else { "s" }
            );
            return Err(error.context(Hint(format!(
                "a rerun keeps a failed job failed; once its cause is gone (memory, a device, data), `ndhtl run {} --retry-failed --state-dir {}` runs it again",
                args.sweep.display(),
                args.state_dir.display()
            ))));
        }
        Ok(())
    })
}

/// One failed job, as `ndhtl run` and `ndhtl status` list it: its short id, what it trains (as
/// the coordinator describes it), the attempt, and the error kept by the coordinator.
fn failure_line(failure: &v1::JobFailure) -> String {
    let job = failure.job.clone().unwrap_or_default();
    let short_id = job.job_id.get(..12).unwrap_or(&job.job_id);
    let what = if failure.description.is_empty() {
        String::new()
    } else {
        format!(" ({})", failure.description)
    };
    format!(
        "failed: {short_id}{what}, attempt {}: {}",
        job.attempt, failure.error
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_is_named_by_what_it_trained() {
        let failure = |job_id: &str, description: &str| v1::JobFailure {
            job: Some(v1::JobAttempt {
                job_id: job_id.into(),
                attempt: 2,
            }),
            error: "training diverged".into(),
            description: description.into(),
        };
        assert_eq!(
            failure_line(&failure(
                &"a".repeat(64),
                "T3 ndhtl seed 4, K 10, η -1, clip 0.5, lr 0.0001"
            )),
            "failed: aaaaaaaaaaaa (T3 ndhtl seed 4, K 10, η -1, clip 0.5, lr 0.0001), attempt 2: training diverged"
        );
        assert_eq!(
            failure_line(&failure("c0ffee", "")),
            "failed: c0ffee, attempt 2: training diverged"
        );
    }
}
