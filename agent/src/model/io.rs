//! Source models on disk: ndhtl's own burnpack files, and PyTorch weights in and out.
//!
//! A source model is `NAME.bpk` (the whole `CifarAlexNet`) with `NAME.json` beside it
//! ([`SourceInfo`]). Fine-tuning needs only its conv features, which can also come from:
//! - a PyTorch `state_dict` saved with `torch.save` (`.pt`, `.pth`), or
//! - a safetensors file (`.safetensors`),
//!
//! named as in bearpaw/pytorch-classification's CIFAR AlexNet:
//!
//! | PyTorch name            | shape            | ndhtl name              |
//! |-------------------------|------------------|-------------------------|
//! | `features.0.weight/bias`  | 64×3×11×11, 64   | `features.conv1.*`      |
//! | `features.3.weight/bias`  | 192×64×5×5, 192  | `features.conv2.*`      |
//! | `features.6.weight/bias`  | 384×192×3×3, 384 | `features.conv3.*`      |
//! | `features.8.weight/bias`  | 256×384×3×3, 256 | `features.conv4.*`      |
//! | `features.10.weight/bias` | 256×256×3×3, 256 | `features.conv5.*`      |
//! | `classifier.weight/bias`  | C×256, C         | `classifier.*` (transposed) |
//!
//! ndhtl's own names (`features.conv1.weight`, …) are accepted too. [`export_safetensors`]
//! writes the PyTorch names and layout, so an exported model loads into the PyTorch AlexNet.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{
    BurnToPyTorchAdapter, BurnpackStore, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::alexnet::{AlexNetFeatures, CifarAlexNet};

/// PyTorch indices of conv1..conv5 inside `features` (bearpaw's nn.Sequential).
pub const PYTORCH_CONV_INDICES: [usize; 5] = [0, 3, 6, 8, 10];

/// What ndhtl writes beside a source model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The source task (`cifar10`, or a class subset).
    pub task: String,
    pub num_classes: usize,
    pub epochs: usize,
    /// Source test top-1 (%), recorded as the spec asks (D-14).
    pub test_top1: f64,
    pub config_fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelIoError {
    #[error("{path}: file not found")]
    NotFound { path: PathBuf },
    #[error("{path}: unsupported model format (use .bpk, .pt, .pth or .safetensors)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: cannot write: {message}")]
    Write { path: PathBuf, message: String },
    #[error(
        "{path}: missing conv weights {missing:?}; expected the names documented in `ndhtl train finetune --help`"
    )]
    MissingTensors { path: PathBuf, missing: Vec<String> },
    #[error("{path}: {errors}")]
    BadTensors { path: PathBuf, errors: String },
    #[error("{path}: invalid source description: {message}")]
    BadInfo { path: PathBuf, message: String },
}

/// Maps every accepted spelling of the conv weights onto `AlexNetFeatures`' own paths.
fn features_remapper() -> KeyRemapper {
    let mut patterns: Vec<(String, String)> =
        vec![(r"^features\.(conv[1-5])\.".into(), "$1.".into())];
    for (layer, index) in PYTORCH_CONV_INDICES.iter().enumerate() {
        patterns.push((
            format!(r"^features\.{index}\."),
            format!("conv{}.", layer + 1),
        ));
    }
    KeyRemapper::from_patterns(patterns).expect("static patterns compile")
}

/// Maps ndhtl's paths onto PyTorch's for export.
fn export_remapper() -> KeyRemapper {
    let patterns: Vec<(String, String)> = PYTORCH_CONV_INDICES
        .iter()
        .enumerate()
        .map(|(layer, index)| {
            (
                format!(r"^features\.conv{}\.", layer + 1),
                format!("features.{index}."),
            )
        })
        .collect();
    KeyRemapper::from_patterns(patterns).expect("static patterns compile")
}

/// Loads the conv features of a source model in any supported format.
pub fn load_source_features(
    path: &Path,
    seed: u64,
    device: &Device,
) -> Result<AlexNetFeatures, ModelIoError> {
    if !path.exists() {
        return Err(ModelIoError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let mut features = AlexNetFeatures::new(seed, device);
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let read_error = |message: String| ModelIoError::Read {
        path: path.to_path_buf(),
        message,
    };
    let result = match extension.as_str() {
        "bpk" => {
            let mut store = BurnpackStore::from_file(path)
                .remap(features_remapper())
                .allow_partial(true);
            features
                .load_from(&mut store)
                .map_err(|e| read_error(e.to_string()))?
        }
        "pt" | "pth" => {
            let mut store = PytorchStore::from_file(path)
                .remap(features_remapper())
                .allow_partial(true);
            features
                .load_from(&mut store)
                .map_err(|e| read_error(e.to_string()))?
        }
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(features_remapper())
                .allow_partial(true);
            features
                .load_from(&mut store)
                .map_err(|e| read_error(e.to_string()))?
        }
        _ => {
            return Err(ModelIoError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
    };
    if !result.errors.is_empty() {
        return Err(ModelIoError::BadTensors {
            path: path.to_path_buf(),
            errors: result
                .errors
                .iter()
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    if !result.missing.is_empty() {
        return Err(ModelIoError::MissingTensors {
            path: path.to_path_buf(),
            missing: result
                .missing
                .iter()
                .map(|(name, _)| name.clone())
                .collect(),
        });
    }
    debug_assert_eq!(result.applied.len(), 10, "five convs, weight and bias each");
    Ok(features)
}

/// Saves a trained source model and its description.
pub fn save_source_model(
    model: &CifarAlexNet,
    info: &SourceInfo,
    path: &Path,
) -> Result<(), ModelIoError> {
    let write_error = |message: String| ModelIoError::Write {
        path: path.to_path_buf(),
        message,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| write_error(e.to_string()))?;
    }
    model
        .clone()
        .save_file(path)
        .map_err(|e| write_error(e.to_string()))?;
    let info_path = path.with_extension("json");
    std::fs::write(
        &info_path,
        serde_json::to_vec_pretty(info).expect("info serialises"),
    )
    .map_err(|e| write_error(e.to_string()))
}

/// Reads `NAME.json` beside a source model, if present.
pub fn read_source_info(model_path: &Path) -> Result<Option<SourceInfo>, ModelIoError> {
    let info_path = model_path.with_extension("json");
    if !info_path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&info_path).map_err(|e| ModelIoError::Read {
        path: info_path.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ModelIoError::BadInfo {
            path: info_path,
            message: e.to_string(),
        })
}

/// Loads a whole ndhtl model (`.bpk`) into `template`, which fixes its shapes.
pub fn load_model(template: CifarAlexNet, path: &Path) -> Result<CifarAlexNet, ModelIoError> {
    if !path.exists() {
        return Err(ModelIoError::NotFound {
            path: path.to_path_buf(),
        });
    }
    template
        .try_load_file(path)
        .map_err(|e| ModelIoError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Writes a model as safetensors with PyTorch's names and layouts (features.N.*, classifier.*
/// as C×256). Plastic parameters keep their ndhtl names (`plastic.alpha`, …).
pub fn export_safetensors(model: &CifarAlexNet, path: &Path) -> Result<(), ModelIoError> {
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(export_remapper())
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| ModelIoError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}
