//! `ndhtl data synth` and `ndhtl data download`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ndhtl_agent::data::DatasetKind;
use ndhtl_agent::data::download::{
    FetchOptions, OFFICIAL_BASE_URL, default_cache_dir, download_dataset, options_with_progress,
};
use ndhtl_agent::data::synth::{SynthOptions, write_synthetic};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write generated data in the official binary layouts (cifar-10-batches-bin/ and
    /// cifar-100-binary/): class-dependent colour and stripe patterns a model can learn, with
    /// CIFAR-100 coarse labels from the real fine-to-coarse table.
    Synth(SynthArgs),
    /// Download the official CIFAR binary archives, check their published size and md5, and
    /// extract them safely. Partial downloads resume; archives are cached for every run.
    Download(DownloadArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Folder to write into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CIFAR-10 training images per class (the official set has 5000).
    #[arg(long, default_value_t = 200)]
    pub cifar10_train_per_class: usize,
    #[arg(long, default_value_t = 50)]
    pub cifar10_test_per_class: usize,
    /// CIFAR-100 training images per fine class (the official set has 500).
    #[arg(long, default_value_t = 60)]
    pub cifar100_train_per_class: usize,
    /// CIFAR-100 test images per fine class (the official set has 100).
    #[arg(long, default_value_t = 20)]
    pub cifar100_test_per_class: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetChoice {
    Cifar10,
    Cifar100,
    All,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Folder that receives cifar-10-batches-bin/ and cifar-100-binary/. Default: the cache's
    /// data/ folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "all")]
    pub dataset: DatasetChoice,
    /// Where the archives are fetched from: the CIFAR page, or a mirror holding the same files.
    #[arg(long, env = "NDHTL_CIFAR_MIRROR", default_value = OFFICIAL_BASE_URL)]
    pub mirror: String,
    /// Cache of downloaded archives, shared by every run ($NDHTL_CACHE_DIR, else
    /// $XDG_CACHE_HOME/ndhtl, else ~/.cache/ndhtl).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Attempts per archive; each resumes where the last one stopped.
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// Seconds before a stalled connection is abandoned (and resumed).
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth(args) => synth(args),
        DataCommand::Download(args) => download(args),
    }
}

fn synth(args: SynthArgs) -> Result<()> {
    let options = SynthOptions {
        seed: args.seed,
        cifar10_train_per_class: args.cifar10_train_per_class,
        cifar10_test_per_class: args.cifar10_test_per_class,
        cifar100_train_per_class: args.cifar100_train_per_class,
        cifar100_test_per_class: args.cifar100_test_per_class,
    };
    let summary = write_synthetic(&args.out, &options)?;
    tracing::info!(
        out = %args.out.display(),
        cifar10_train = summary.cifar10_train,
        cifar10_test = summary.cifar10_test,
        cifar100_train = summary.cifar100_train,
        cifar100_test = summary.cifar100_test,
        "synthetic data written"
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn download(args: DownloadArgs) -> Result<()> {
    let cache_dir = args.cache_dir.unwrap_or_else(default_cache_dir);
    let out = args.out.unwrap_or_else(|| cache_dir.join("data"));
    let mut options = if args.no_progress {
        FetchOptions::new(cache_dir)
    } else {
        options_with_progress(cache_dir)
    };
    options.attempts = args.attempts.max(1);
    options.timeout = std::time::Duration::from_secs(args.timeout_secs);
    let datasets = match args.dataset {
        DatasetChoice::Cifar10 => vec![DatasetKind::Cifar10],
        DatasetChoice::Cifar100 => vec![DatasetKind::Cifar100],
        DatasetChoice::All => vec![DatasetKind::Cifar10, DatasetKind::Cifar100],
    };
    for dataset in datasets {
        let dir = download_dataset(dataset, &args.mirror, &out, &options)
            .with_context(|| format!("downloading {dataset}"))?;
        tracing::info!(%dataset, dir = %dir.display(), "ready");
        println!("{}", dir.display());
    }
    Ok(())
}
