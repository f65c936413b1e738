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
    /// `cuda` (every GPU) or `cuda:N`.
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
    #[error("`--device cuda` asks for every GPU, but libtorch sees none on this machine")]
    NoGpu,
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

    /// Parses a label as [`ComputeDevice::label`] writes it (`flex:cpu`, `tch:cpu`,
    /// `tch:cuda:0`), or a bare device (`cpu`, `cuda:1`) on the preferred backend.
    pub fn from_label(label: &str) -> Result<Self, DeviceError> {
        let (backend, device) = match label.split_once(':') {
            Some(("flex", device)) => (Some(BackendKind::Flex), device),
            Some(("tch", device)) => (Some(BackendKind::Tch), device),
            _ => (None, label),
        };
        ComputeDevice::resolve(device.parse()?, backend)
    }

    /// The device the numerical tests run on: `$NDHTL_TEST_DEVICE` (a label such as
    /// `tch:cuda:0`), else flex on the CPU. `deploy/gpu-check.sh` runs them on a GPU this way.
    pub fn for_tests() -> Self {
        let label = std::env::var("NDHTL_TEST_DEVICE").unwrap_or_else(|_| "flex:cpu".into());
        ComputeDevice::from_label(&label)
            .unwrap_or_else(|error| panic!("NDHTL_TEST_DEVICE=`{label}`: {error}"))
    }

    /// Whether this is a GPU, where kernels may pick non-deterministic or TF32 algorithms.
    pub fn is_gpu(&self) -> bool {
        matches!(self.spec, DeviceSpec::Cuda(_))
    }
}

/// Runs `work` with at most `threads` CPU threads for tensor work: flex's kernels run in a rayon
/// pool of that size, and libtorch's intra-op pool is set for this thread. `None` runs `work`
/// as is. A pool that cannot be built is reported and `work` runs on the global pool.
pub fn with_cpu_threads<T: Send>(threads: Option<usize>, work: impl FnOnce() -> T + Send) -> T {
    let Some(threads) = threads.filter(|&threads| threads > 0) else {
        return work();
    };
    #[cfg(feature = "tch")]
    tch::set_num_threads(threads as i32);
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(work),
        Err(error) => {
            tracing::warn!(%error, threads, "could not build a per-slot thread pool; using the global one");
            work()
        }
    }
}

/// What this binary was built with, for `ndhtl --version` and agent registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInfo {
    pub backends: Vec<BackendKind>,
    /// libtorch's version (`tch` builds).
    pub libtorch_version: Option<String>,
    /// The CUDA version libtorch was built with, when it has CUDA.
    pub cuda_version: Option<String>,
    /// GPUs visible now.
    pub gpus: usize,
}

pub fn build_info() -> BuildInfo {
    BuildInfo {
        backends: compiled_backends(),
        libtorch_version: option_env!("NDHTL_LIBTORCH_VERSION").map(str::to_string),
        cuda_version: option_env!("NDHTL_LIBTORCH_CUDA").map(str::to_string),
        gpus: cuda_device_count(),
    }
}

impl fmt::Display for BuildInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backends: Vec<&str> = self.backends.iter().map(|b| b.as_str()).collect();
        write!(f, "backends: {}", backends.join(", "))?;
        if let Some(version) = &self.libtorch_version {
            write!(f, "; libtorch {version}")?;
            match &self.cuda_version {
                Some(cuda) => write!(f, " (CUDA {cuda})")?,
                None => write!(f, " (CPU only)")?,
            }
            write!(f, "; GPUs visible: {}", self.gpus)?;
        }
        Ok(())
    }
}

/// The GPUs libtorch sees (0 without the `tch` feature or without CUDA).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "tch")]
    {
        tch::Cuda::device_count().max(0) as usize
    }
    #[cfg(not(feature = "tch"))]
    {
        0
    }
}

/// The devices the agent's slots run on, one entry per slot: `slots` jobs share the CPU, and
/// each GPU (`cuda` means every GPU libtorch sees) runs `slots` jobs side by side. At batch 1
/// one job leaves most of a GPU idle, so a few per GPU finish a sweep sooner.
pub fn slot_devices(spec: DeviceSpec, slots: u32) -> Result<Vec<DeviceSpec>, DeviceError> {
    let slots = slots.max(1) as usize;
    let gpus: Vec<DeviceSpec> = match spec {
        DeviceSpec::Cpu => return Ok(vec![DeviceSpec::Cpu; slots]),
        DeviceSpec::Cuda(Some(index)) => vec![DeviceSpec::Cuda(Some(index))],
        DeviceSpec::Cuda(None) => {
            if !BackendKind::Tch.is_compiled() {
                return Err(DeviceError::NeedsTch {
                    device: spec.to_string(),
                });
            }
            let count = cuda_device_count();
            if count == 0 {
                return Err(DeviceError::NoGpu);
            }
            (0..count)
                .map(|index| DeviceSpec::Cuda(Some(index)))
                .collect()
        }
    };
    Ok(repeat_each(&gpus, slots))
}

/// `[a, b]` with 2 → `[a, a, b, b]`: slots of one GPU stay next to each other.
fn repeat_each(devices: &[DeviceSpec], times: usize) -> Vec<DeviceSpec> {
    devices
        .iter()
        .flat_map(|device| std::iter::repeat_n(*device, times))
        .collect()
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

    #[test]
    fn slots_are_per_device() {
        assert_eq!(
            slot_devices(DeviceSpec::Cpu, 3).unwrap(),
            vec![DeviceSpec::Cpu; 3]
        );
        assert_eq!(
            slot_devices(DeviceSpec::Cpu, 0).unwrap(),
            vec![DeviceSpec::Cpu]
        );
        assert_eq!(
            slot_devices(DeviceSpec::Cuda(Some(2)), 2).unwrap(),
            vec![DeviceSpec::Cuda(Some(2)); 2]
        );
        let two_gpus = [DeviceSpec::Cuda(Some(0)), DeviceSpec::Cuda(Some(1))];
        assert_eq!(
            repeat_each(&two_gpus, 2),
            vec![
                DeviceSpec::Cuda(Some(0)),
                DeviceSpec::Cuda(Some(0)),
                DeviceSpec::Cuda(Some(1)),
                DeviceSpec::Cuda(Some(1)),
            ]
        );
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn cuda_without_tch_explains_how_to_get_it() {
        let err = ComputeDevice::resolve(DeviceSpec::Cuda(None), None).unwrap_err();
        assert!(err.to_string().contains("--features tch"), "{err}");
    }
}
