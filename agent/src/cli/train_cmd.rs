//! `ndhtl train source`, `ndhtl train finetune` and `ndhtl export`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ndhtl_agent::data::TaskSpec;
use ndhtl_agent::device::{BackendKind, ComputeDevice, DeviceSpec};
use ndhtl_agent::model::io::{
    SourceInfo, export_safetensors, load_model, load_source_features, read_source_info,
    save_source_model,
};
use ndhtl_agent::model::{
    CifarAlexNet, LossKind, PlasticConfig, PlasticityRule, PostActivity, TraceMode,
};
use ndhtl_agent::train::checkpoint::config_fingerprint;
use ndhtl_agent::train::{
    CancelToken, FinetuneConfig, KReduce, LossSteps, Method, ResetPolicy, RunOutcome, SourceConfig,
    TaskData, run_finetune, run_source,
};
use sha2::{Digest, Sha256};

use super::progress::{CliProgress, MetricsSink};

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Train the source model W^S from scratch on CIFAR-10 (Algorithm 1's input): SGD lr 0.1,
    /// momentum 0.9, weight decay 5e-4, batch 128, 164 epochs, lr ×0.1 at 50 % and 75 %, random
    /// crop and flip.
    Source(Box<SourceArgs>),
    /// Fine-tune a source model on one target task, by STL or NDHTL.
    Finetune(Box<FinetuneArgs>),
}

/// Where and how to run.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// Compute device: `cpu`, `cuda:N`, or `cuda` (GPU 0 for a single job).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Backend: flex (pure Rust, the default build) or tch (libtorch; build with --features tch).
    /// Default: tch when compiled in, else flex.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Folder for checkpoints (one per lifetime) and metrics.jsonl. An existing checkpoint of the
    /// same configuration is resumed. Default: `runs/<job>-<config hash>`.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Where to write one JSON line of metrics per lifetime: `-` for stdout, or a file.
    #[arg(long, default_value = "-")]
    pub metrics: PathBuf,
}

impl RunnerArgs {
    /// `--run-dir`, or `runs/<job>-<config hash>` so the same command resumes the same run.
    fn run_dir(&self, job: &str, fingerprint: &str) -> PathBuf {
        self.run_dir.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(format!(
                "{job}-{}",
                &fingerprint[..fingerprint.len().min(10)]
            ))
        })
    }

    /// The progress bar and metric lines for a job of `lifetimes` lifetimes.
    fn progress(&self, job: &str, lifetimes: usize) -> Result<CliProgress> {
        let sink = MetricsSink::open(&self.metrics)
            .with_context(|| format!("opening {}", self.metrics.display()))?;
        Ok(CliProgress::new(job.into(), lifetimes, sink))
    }

    fn device(&self) -> Result<ComputeDevice> {
        let spec: DeviceSpec = self.device.parse()?;
        Ok(ComputeDevice::resolve(spec, self.backend)?)
    }
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Data folder holding cifar-10-batches-bin/ (from `ndhtl data download` or `data synth`).
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the trained model (.bpk); its description goes beside it (.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Source classes: `cifar10` (all ten), or a subset such as `cifar10:airplane,ship,truck`.
    #[arg(long, default_value = "cifar10")]
    pub task: String,
    /// Epochs over the source training set (the reference recipe: 164; fewer gives the paper's
    /// "partially trained" source).
    #[arg(long, default_value_t = 164)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the first N training images of each class.
    #[arg(long)]
    pub train_per_class: Option<usize>,
    /// Turn off random crop and flip.
    #[arg(long)]
    pub no_augment: bool,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// Data folder holding the target's dataset (cifar-100-binary/ for T1..T10).
    #[arg(long)]
    pub data: PathBuf,
    /// The source model W^S: ndhtl's .bpk, or PyTorch weights (.pt/.pth state_dict or
    /// .safetensors) named as bearpaw's CIFAR AlexNet: features.{0,3,6,8,10}.{weight,bias}.
    #[arg(long)]
    pub source: PathBuf,
    /// Target task: T1..T10 (spec §6: two CIFAR-100 superclasses each), or custom classes such as
    /// `cifar100:apple,bear,3`, `cifar100:super=fish,flowers`, `cifar10:cat,dog`.
    #[arg(long, default_value = "T1")]
    pub task: String,
    /// stl: fresh Linear head, a backward pass every step. ndhtl: plastic head, Hebbian update
    /// every step, a backward pass every K steps.
    #[arg(long, value_enum, default_value = "ndhtl")]
    pub method: Method,
    /// Lifetimes (the paper: "one epoch of training is represented as one lifetime").
    #[arg(long, default_value_t = 20)]
    pub lifetimes: usize,
    /// Images per step (the paper: 1).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Learning rate (the paper's "0.0001" for fine-tuning).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay on the conv layers, W and b (never on α, η, the modulator).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Seed of the head initialisation and the data order; STL and NDHTL with the same seed see
    /// the same data and the same W, b.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the first N training images of each class (few-label transfer).
    #[arg(long)]
    pub train_per_class: Option<usize>,
    /// Train only the head; the transferred conv layers stay fixed (linear probe).
    #[arg(long)]
    pub freeze_features: bool,
    /// Turn off random crop and flip.
    #[arg(long)]
    pub no_augment: bool,
    /// Training loss: ce (the paper's experimental setup) or bce (Eq. 5 on softmax outputs).
    #[arg(long, value_enum, default_value = "ce")]
    pub loss: LossKind,
    /// NDHTL: "backprop every K episodes": one backward pass per K steps (truncated BPTT through
    /// the Hebbian trace). K < 3 leaves η (and for K = 1 the modulator) untrained.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// NDHTL: η₀, the initial rate of the eligibility trace E (a learned "meta-parameter").
    /// Outside [0, 1] the trace does not average (a warning says how); `--eta -1` is accepted.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub eta: f32,
    /// NDHTL: keep η fixed at η₀.
    #[arg(long)]
    pub fixed_eta: bool,
    /// NDHTL: "clipval": the Hebbian matrix is clamped to [−clip, clip].
    #[arg(long, default_value_t = 0.5)]
    pub clip: f32,
    /// NDHTL: retroactive (dopamine-gated eligibility trace, Eqs. 3–4) or simple
    /// (H ← clamp(H + M·x_i x_j)).
    #[arg(long, value_enum, default_value = "retroactive")]
    pub rule: PlasticityRule,
    /// NDHTL: one neuromodulation value per output neuron (M ∈ ℝ^C) instead of one scalar.
    #[arg(long)]
    pub fanout: bool,
    /// NDHTL: post-synaptic activity x_j: softmax of the logits, or tanh.
    #[arg(long, value_enum, default_value = "softmax")]
    pub post: PostActivity,
    /// NDHTL: one trace shared by the batch (batch means), or one per batch slot.
    #[arg(long, value_enum, default_value = "shared")]
    pub trace: TraceMode,
    /// NDHTL: when H and E are zeroed: at the task's start, every lifetime, or every window.
    #[arg(long, value_enum, default_value = "task")]
    pub reset: ResetPolicy,
    /// NDHTL: window loss from every step, or only the last ("N/K cost-function calculations").
    #[arg(long, value_enum, default_value = "all")]
    pub loss_steps: LossSteps,
    /// NDHTL: sum or average the window's step losses.
    #[arg(long, value_enum, default_value = "sum")]
    pub k_reduce: KReduce,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 1000)]
    pub eval_batch_size: usize,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

impl FinetuneArgs {
    pub fn config(&self) -> FinetuneConfig {
        FinetuneConfig {
            task: self.task.clone(),
            method: self.method,
            lifetimes: self.lifetimes,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            seed: self.seed,
            train_per_class: self.train_per_class,
            freeze_features: self.freeze_features,
            augment: !self.no_augment,
            loss: self.loss,
            k: self.k,
            eta: self.eta,
            fixed_eta: self.fixed_eta,
            plastic: PlasticConfig {
                rule: self.rule,
                fanout: self.fanout,
                post: self.post,
                trace: self.trace,
                clip: self.clip,
            },
            reset: self.reset,
            loss_steps: self.loss_steps,
            k_reduce: self.k_reduce,
            eval_batch_size: self.eval_batch_size,
            // `--data` names the folder; the CLI trains on whatever CIFAR-format data is there.
            dataset: Default::default(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// An ndhtl model (.bpk) with its .json description beside it.
    #[arg(long)]
    pub model: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(command: TrainCommand) -> Result<()> {
    match command {
        TrainCommand::Source(args) => source(*args),
        TrainCommand::Finetune(args) => finetune(*args),
    }
}

fn finish(progress: &mut CliProgress, outcome: &RunOutcome, job: &str, seconds: f64) -> Result<()> {
    if let Some(error) = progress.write_error.take() {
        return Err(error).context("writing metrics");
    }
    progress
        .write_summary(&outcome.summary)
        .context("writing metrics")?;
    let s = &outcome.summary;
    eprintln!(
        "{job}: final top-1 {:.2}% top-5 {:.2}% val loss {:.4} (best top-1 {:.2}% at lifetime {}) after {} lifetimes, {:.0} s",
        s.final_top1,
        s.final_top5,
        s.final_val_loss,
        s.best_top1,
        s.best_top1_lifetime,
        s.lifetimes,
        seconds
    );
    Ok(())
}

fn cancel_on_ctrl_c() -> CancelToken {
    // The first Ctrl-C stops at the next step (the last checkpoint stays valid); a second one
    // kills the process the usual way.
    let token = CancelToken::new();
    let handler_token = token.clone();
    let _ = ctrlc_once(move || handler_token.cancel());
    token
}

fn ctrlc_once(f: impl Fn() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name("ndhtl-signal".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    tracing::warn!("interrupted: stopping after this step; run the same command again to resume");
                    f();
                    let _ = tokio::signal::ctrl_c().await;
                    std::process::exit(130);
                }
            });
        }
    })?;
    Ok(())
}

fn source(args: SourceArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let task: TaskSpec = args.task.parse()?;
    let config = SourceConfig {
        task: args.task.clone(),
        epochs: args.epochs,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        batch_size: args.batch_size,
        seed: args.seed,
        train_per_class: args.train_per_class,
        augment: !args.no_augment,
        ..SourceConfig::default()
    };
    config.validate()?;
    let device = args.runner.device()?;
    let data = TaskData::load(&args.data, &task, config.train_per_class)?;
    let fingerprint = config_fingerprint(&(&config, &task.classes));
    let run_dir = args.runner.run_dir("source", &fingerprint);
    tracing::info!(device = %device.label(), run_dir = %run_dir.display(), epochs = config.epochs, "source training");
    let mut progress = args.runner.progress("source", config.epochs)?;
    let outcome = run_source(
        &config,
        &data,
        &device,
        Some(&run_dir),
        &mut progress,
        &cancel_on_ctrl_c(),
    )?;
    let info = SourceInfo {
        task: args.task,
        num_classes: task.num_classes(),
        epochs: config.epochs,
        test_top1: outcome.run.summary.final_top1,
        config_fingerprint: outcome.fingerprint.clone(),
    };
    save_source_model(&outcome.model, &info, &args.out)?;
    tracing::info!(model = %args.out.display(), test_top1 = info.test_top1, "source model written");
    finish(
        &mut progress,
        &outcome.run,
        "source",
        started.elapsed().as_secs_f64(),
    )
}

/// Identifies a source model by its content, so a fine-tune resumes only from the same source.
fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

fn finetune(args: FinetuneArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let config = args.config();
    config.validate()?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let task: TaskSpec = config.task.parse()?;
    let device = args.runner.device()?;
    if let Some(info) = read_source_info(&args.source)? {
        tracing::info!(source_task = %info.task, source_top1 = info.test_top1, epochs = info.epochs, "source model");
    }
    let source_id = file_sha256(&args.source)?;
    let features = load_source_features(&args.source, config.seed, &device.device)?;
    let data = TaskData::load(&args.data, &task, config.train_per_class)?;
    if data.train.len() < config.batch_size && config.plastic.trace == TraceMode::PerSample {
        bail!(
            "per-sample traces need at least one full batch of {} images",
            config.batch_size
        );
    }
    let job = format!("{}-{}", task, config.method.as_str());
    let fingerprint = config_fingerprint(&(&config, &source_id));
    let run_dir = args.runner.run_dir(&job, &fingerprint);
    tracing::info!(
        device = %device.label(),
        run_dir = %run_dir.display(),
        task = %task,
        method = config.method.as_str(),
        k = config.k,
        eta = config.eta,
        clip = config.plastic.clip,
        "fine-tuning"
    );
    let mut progress = args.runner.progress(&job, config.lifetimes)?;
    let outcome = run_finetune(
        &config,
        features,
        &source_id,
        &data,
        &device,
        Some(&run_dir),
        &mut progress,
        &cancel_on_ctrl_c(),
    )?;
    finish(
        &mut progress,
        &outcome,
        &job,
        started.elapsed().as_secs_f64(),
    )
}

pub fn export(args: ExportArgs) -> Result<()> {
    let info = read_source_info(&args.model)?.with_context(|| {
        format!(
            "{} has no .json description beside it; cannot tell its class count",
            args.model.display()
        )
    })?;
    let device = burn::tensor::Device::flex();
    let model = load_model(CifarAlexNet::new(info.num_classes, 0, &device), &args.model)?;
    export_safetensors(&model, &args.out)?;
    tracing::info!(out = %args.out.display(), "exported with PyTorch names");
    Ok(())
}
