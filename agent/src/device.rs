//! Picking the compute device: `--device cpu|cuda|cuda:N`, on the backends compiled in.
//!
//! Burn 0.22 chooses the backend through the device (`Device::flex()`, `Device::libtorch()`,
//! `Device::libtorch_cuda(i)`), so the model code is the same on every backend.
//! - `cpu`: libtorch's CPU backend when built with `--features tch` (fast), else flex (pure Rust).
//! - `cuda`, `cuda:N`: libtorch CUDA; needs the `tch` feature.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeviceSpec {
    Cpu,
    /// `cuda` (every GPU; one job per GPU) or `cuda:N`.
    Cuda(Option<usize>),
}

/// A backend that can run the model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Burn's pure-Rust CPU backend (the embedded default).
    Flex,
    /// libtorch through burn-tch (CPU and CUDA).
    Tch,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Tch => "tch",
        }
    }

    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => true,
            BackendKind::Tch => cfg!(feature = "tch"),
        }
    }
}

/// The backends this binary was built with, preferred first.
pub fn compiled_backends() -> Vec<BackendKind> {
    [BackendKind::Tch, BackendKind::Flex]
        .into_iter()
        .filter(|b| b.is_compiled())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`: use `cpu`, `cuda` or `cuda:N`")]
    Unknown(String),
    #[error(
        "`{device}` needs the libtorch backend; this binary was built without it (rebuild with `--features tch`, see README)"
    )]
    NeedsTch { device: String },
    #[error("backend `{0}` is not compiled into this binary")]
    BackendNotCompiled(&'static str),
    #[error("the flex backend runs on the CPU only, not on `{0}`")]
    FlexIsCpuOnly(String),
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(None)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|index| index.parse().ok())
                .map(|index| DeviceSpec::Cuda(Some(index)))
                .ok_or_else(|| DeviceError::Unknown(text.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(None) => f.write_str("cuda"),
            DeviceSpec::Cuda(Some(index)) => write!(f, "cuda:{index}"),
        }
    }
}

/// A resolved device: the backend and the Burn device (without autodiff).
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    pub backend: BackendKind,
    pub spec: DeviceSpec,
    pub device: Device,
}

impl ComputeDevice {
    /// Resolves `spec` on `backend` (or the preferred compiled backend).
    pub fn resolve(spec: DeviceSpec, backend: Option<BackendKind>) -> Result<Self, DeviceError> {
        let backend = match backend {
            Some(backend) if !backend.is_compiled() => {
                return Err(DeviceError::BackendNotCompiled(backend.as_str()));
            }
            Some(backend) => backend,
            None => match spec {
                DeviceSpec::Cpu => compiled_backends()[0],
                DeviceSpec::Cuda(_) => BackendKind::Tch,
            },
        };
        let device = match (backend, spec) {
            (BackendKind::Flex, DeviceSpec::Cpu) => Device::flex(),
            (BackendKind::Flex, cuda) => return Err(DeviceError::FlexIsCpuOnly(cuda.to_string())),
            (BackendKind::Tch, spec) => tch_device(spec)?,
        };
        Ok(ComputeDevice {
            backend,
            spec,
            device,
        })
    }

    /// The same device with autodiff, for training.
    pub fn autodiff(&self) -> Device {
        self.device.clone().autodiff()
    }

    /// `flex:cpu`, `tch:cuda:0`, …
    pub fn label(&self) -> String {
        format!("{}:{}", self.backend.as_str(), self.spec)
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream but is the only GPU path buildable here
fn tch_device(spec: DeviceSpec) -> Result<Device, DeviceError> {
    Ok(match spec {
        DeviceSpec::Cpu => Device::libtorch(),
        DeviceSpec::Cuda(index) => Device::libtorch_cuda(index.unwrap_or(0)),
    })
}

#[cfg(not(feature = "tch"))]
fn tch_device(spec: DeviceSpec) -> Result<Device, DeviceError> {
    Err(DeviceError::NeedsTch {
        device: spec.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(None)));
        assert_eq!(
            "CUDA:3".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Cuda(Some(3)))
        );
        assert!(matches!(
            "tpu".parse::<DeviceSpec>(),
            Err(DeviceError::Unknown(_))
        ));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn flex_cannot_run_on_cuda() {
        let err =
            ComputeDevice::resolve(DeviceSpec::Cuda(Some(0)), Some(BackendKind::Flex)).unwrap_err();
        assert!(matches!(err, DeviceError::FlexIsCpuOnly(_)));
        let cpu = ComputeDevice::resolve(DeviceSpec::Cpu, Some(BackendKind::Flex)).unwrap();
        assert_eq!(cpu.label(), "flex:cpu");
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn cuda_without_tch_explains_how_to_get_it() {
        let err = ComputeDevice::resolve(DeviceSpec::Cuda(None), None).unwrap_err();
        assert!(err.to_string().contains("--features tch"), "{err}");
    }
}
