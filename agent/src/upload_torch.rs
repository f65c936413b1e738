//! Pinned, asynchronous uploads onto libtorch's CUDA devices ([`crate::upload`]).
//!
//! The host values are viewed as a CPU tensor without a copy (`from_blob`), copied once into
//! page-locked memory from libtorch's caching host allocator (`_pin_memory`, the allocator
//! `Tensor.pin_memory()` uses; the public `pin_memory(device)` would print a deprecation warning
//! at every call), and copied to the device with `non_blocking`. That copy records an event on
//! the pinned block, and the allocator does not reuse the block before the event has passed, so
//! the pinned tensor can be dropped at once: this is PyTorch's own `pin_memory()` +
//! `.to(device, non_blocking=True)`. Kernels that read the uploaded tensor run after the copy on
//! the same stream.
//!
//! If libtorch refuses to pin, uploads fall back to burn-tch's pageable copy for the rest of the
//! process (one warning); if a device copy fails, that upload takes burn-tch's copy, which fails
//! the job as before when the device is out of memory. Either way a job never fails because of
//! this path.
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::libtorch::{LibTorchDevice, TchTensor};
use burn::backend::{DispatchDevice, LibTorch};
use burn::tensor::{BackendPrimitive, Device, Int, Tensor};

use crate::upload::HostUploads;

static PINNING_REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether libtorch has refused to pin host memory in this process (uploads then take the
/// pageable copy). For tests and diagnostics.
pub fn pinned_uploads_refused() -> bool {
    PINNING_REFUSED.load(Ordering::Relaxed)
}

/// The CUDA device index when `device` (with or without autodiff) is libtorch's CUDA and pinned
/// uploads are on.
fn pinned_target(device: &Device) -> Option<usize> {
    if HostUploads::current() != HostUploads::Auto || pinned_uploads_refused() {
        return None;
    }
    match device.clone().without_autodiff().as_dispatch() {
        DispatchDevice::LibTorch(LibTorchDevice::Cuda(index)) => Some(*index),
        _ => None,
    }
}

/// Host values libtorch can take as they are.
trait HostElement: Copy {
    const KIND: tch::Kind;
}

impl HostElement for f32 {
    const KIND: tch::Kind = tch::Kind::Float;
}

impl HostElement for i64 {
    const KIND: tch::Kind = tch::Kind::Int64;
}

/// Where a pinned upload failed.
#[derive(Debug)]
enum UploadFailure {
    /// Viewing or pinning the host values: pinned memory is unavailable to this process.
    Pinning(tch::TchError),
    /// The device copy (an out-of-memory device, say): this upload only.
    DeviceCopy(tch::TchError),
}

fn upload<T: HostElement>(
    values: &[T],
    shape: &[usize],
    device_index: usize,
) -> Result<tch::Tensor, UploadFailure> {
    // The element count was checked against `shape` by the caller (`crate::upload`).
    let dims: Vec<i64> = shape.iter().map(|&size| size as i64).collect();
    let cuda = tch::Device::Cuda(device_index);
    // SAFETY: `values` holds exactly `dims`' element count of initialised `T`, laid out
    // row-major as `from_blob` with default strides expects, and outlives `host`: `host` is only
    // read by the synchronous copy into pinned memory and dropped before this returns.
    let host = unsafe {
        tch::Tensor::f_from_blob(
            values.as_ptr().cast::<u8>(),
            &dims,
            &[],
            T::KIND,
            tch::Device::Cpu,
        )
        .map_err(UploadFailure::Pinning)?
    };
    let pinned = host
        .f_internal_pin_memory(cuda)
        .map_err(UploadFailure::Pinning)?;
    drop(host);
    pinned
        .f_to_device_(cuda, T::KIND, true, false)
        .map_err(UploadFailure::DeviceCopy)
}

/// A refused pin turns pinned uploads off for the process (one warning). A failed device copy
/// does not: this upload takes burn-tch's copy, which fails the job the way it always has if
/// the device is out of memory, and the next job on this agent pins again.
fn fall_back(failure: UploadFailure) {
    match failure {
        UploadFailure::Pinning(error) => {
            if !PINNING_REFUSED.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "libtorch refused to pin host memory; uploads take the pageable copy from now on");
            }
        }
        UploadFailure::DeviceCopy(error) => {
            tracing::debug!(%error, "a pinned upload's device copy failed; this upload takes the pageable copy");
        }
    }
}

/// The values on `device`'s autodiff too, when it has one (as `Tensor::from_data` would).
fn with_device_autodiff<const D: usize, K: burn::tensor::kind::Autodiff>(
    tensor: Tensor<D, K>,
    device: &Device,
) -> Tensor<D, K> {
    match device.gradient_checkpointing_strategy() {
        Some(strategy) => tensor
            .autodiff()
            .with_gradient_checkpointing_strategy(strategy),
        None => tensor,
    }
}

/// [`crate::upload::float_to_device`] on libtorch's CUDA; `None` elsewhere or if refused.
pub fn pinned_float<const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &Device,
) -> Option<Tensor<D>> {
    pinned(values, shape, device)
}

/// [`crate::upload::int_to_device`] on libtorch's CUDA; `None` elsewhere or if refused.
pub fn pinned_int<const D: usize>(
    values: &[i64],
    shape: [usize; D],
    device: &Device,
) -> Option<Tensor<D, Int>> {
    pinned(values, shape, device)
}

/// A tensor of kind `K` (float or int: both are a `TchTensor` on libtorch) from `values`.
fn pinned<T, K, const D: usize>(
    values: &[T],
    shape: [usize; D],
    device: &Device,
) -> Option<Tensor<D, K>>
where
    T: HostElement,
    K: BackendPrimitive<LibTorch, Primitive = TchTensor> + burn::tensor::kind::Autodiff,
{
    let device_index = pinned_target(device)?;
    match upload(values, &shape, device_index) {
        Ok(tensor) => {
            let tensor = Tensor::<D, K>::from_primitive::<LibTorch>(TchTensor::new(tensor));
            Some(with_device_autodiff(tensor, device))
        }
        Err(failure) => {
            fall_back(failure);
            None
        }
    }
}
