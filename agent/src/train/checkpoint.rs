//! Checkpoints after every lifetime: model, optimizer momentum, Hebbian state and progress.
//!
//! Layout of a run folder:
//! ```text
//! RUN/checkpoint/model.bpk       parameters (burnpack, ParamIds kept)
//! RUN/checkpoint/optimizer.bpk   SGD momentum, keyed by ParamId
//! RUN/checkpoint/hebbian.bpk     H and E (NDHTL only)
//! RUN/checkpoint/progress.json   completed lifetimes, metrics history, config fingerprint
//! ```
//! A new checkpoint is written to `checkpoint.tmp/` and swapped in with renames, so a crash
//! leaves either the old or the new checkpoint, never a mix.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::optim::ModuleOptimizer;
use burn::store::RecordError;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::metrics::LifetimeMetrics;
use crate::model::{CifarAlexNet, HebbianState};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Record { path: PathBuf, message: String },
    #[error("{path}: not a valid progress file: {source}")]
    Progress {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: the checkpoint was written by a different configuration (fingerprint {found}, this run is {expected}); use a new --run-dir"
    )]
    ConfigMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn record(path: &Path) -> impl FnOnce(RecordError) -> CheckpointError + '_ {
    move |error| CheckpointError::Record {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// SHA-256 of a configuration's canonical JSON: a checkpoint only resumes its own run.
pub fn config_fingerprint<T: Serialize>(config: &T) -> String {
    let canonical = serde_json::to_vec(config).expect("configurations serialise");
    hex::encode(Sha256::digest(canonical))
}

/// `progress.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub fingerprint: String,
    pub completed_lifetimes: usize,
    pub history: Vec<LifetimeMetrics>,
}

/// The Hebbian state as a module, so it is stored like parameters.
#[derive(Module, Debug)]
struct HebbianRecord {
    hebb: Param<Tensor<3>>,
    elig: Param<Tensor<3>>,
}

/// A checkpoint read back from disk.
pub struct LoadedCheckpoint {
    pub model: CifarAlexNet,
    pub optimizer: ModuleOptimizer,
    pub hebbian: Option<HebbianState>,
    pub progress: Progress,
}

pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

/// Writes a checkpoint atomically (stage, then rename).
pub fn save_checkpoint(
    run_dir: &Path,
    model: &CifarAlexNet,
    optimizer: &ModuleOptimizer,
    hebbian: Option<&HebbianState>,
    progress: &Progress,
) -> Result<PathBuf, CheckpointError> {
    let final_dir = checkpoint_dir(run_dir);
    let staging = run_dir.join("checkpoint.tmp");
    let previous = run_dir.join("checkpoint.old");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io(&staging))?;

    let model_path = staging.join("model.bpk");
    model
        .clone()
        .save_file(&model_path)
        .map_err(record(&model_path))?;
    let optimizer_path = staging.join("optimizer.bpk");
    optimizer
        .save(&optimizer_path)
        .map_err(record(&optimizer_path))?;
    if let Some(state) = hebbian {
        let hebbian_path = staging.join("hebbian.bpk");
        HebbianRecord {
            hebb: Param::from_tensor(state.hebb.clone().detach()),
            elig: Param::from_tensor(state.elig.clone().detach()),
        }
        .save_file(&hebbian_path)
        .map_err(record(&hebbian_path))?;
    }
    let progress_path = staging.join("progress.json");
    let json = serde_json::to_vec_pretty(progress).expect("progress serialises");
    fs::write(&progress_path, json).map_err(io(&progress_path))?;

    if previous.exists() {
        fs::remove_dir_all(&previous).map_err(io(&previous))?;
    }
    if final_dir.exists() {
        fs::rename(&final_dir, &previous).map_err(io(&final_dir))?;
    }
    fs::rename(&staging, &final_dir).map_err(io(&final_dir))?;
    if previous.exists() {
        fs::remove_dir_all(&previous).map_err(io(&previous))?;
    }
    Ok(final_dir)
}

/// Reads `progress.json` of a run, if a checkpoint exists.
pub fn read_progress(run_dir: &Path) -> Result<Option<Progress>, CheckpointError> {
    let mut dir = checkpoint_dir(run_dir);
    if !dir.exists() {
        // A crash between the two renames leaves only the old checkpoint.
        dir = run_dir.join("checkpoint.old");
        if !dir.exists() {
            return Ok(None);
        }
    }
    let path = dir.join("progress.json");
    let bytes = fs::read(&path).map_err(io(&path))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CheckpointError::Progress { path, source })
}

/// Loads the run's checkpoint into `template` (which fixes shapes) and `optimizer` (which fixes
/// parameter groups, built for the loaded model by `make_optimizer`).
pub fn load_checkpoint(
    run_dir: &Path,
    template: CifarAlexNet,
    expected_fingerprint: &str,
    hebbian_shape: Option<[usize; 3]>,
    device: &Device,
    make_optimizer: impl FnOnce(&CifarAlexNet) -> ModuleOptimizer,
) -> Result<Option<LoadedCheckpoint>, CheckpointError> {
    let Some(progress) = read_progress(run_dir)? else {
        return Ok(None);
    };
    let mut dir = checkpoint_dir(run_dir);
    if !dir.exists() {
        dir = run_dir.join("checkpoint.old");
    }
    if progress.fingerprint != expected_fingerprint {
        return Err(CheckpointError::ConfigMismatch {
            path: dir.join("progress.json"),
            found: progress.fingerprint,
            expected: expected_fingerprint.to_string(),
        });
    }
    let model_path = dir.join("model.bpk");
    let model = template
        .try_load_file(&model_path)
        .map_err(record(&model_path))?;
    let optimizer_path = dir.join("optimizer.bpk");
    let optimizer = make_optimizer(&model)
        .load(&optimizer_path)
        .map_err(record(&optimizer_path))?;
    let hebbian = match hebbian_shape {
        Some(shape) => {
            let path = dir.join("hebbian.bpk");
            let loaded = HebbianRecord {
                hebb: Param::from_tensor(Tensor::zeros(shape, device)),
                elig: Param::from_tensor(Tensor::zeros(shape, device)),
            }
            .try_load_file(&path)
            .map_err(record(&path))?;
            Some(HebbianState {
                hebb: loaded.hebb.val().detach(),
                elig: loaded.elig.val().detach(),
            })
        }
        None => None,
    };
    Ok(Some(LoadedCheckpoint {
        model,
        optimizer,
        hebbian,
        progress,
    }))
}
