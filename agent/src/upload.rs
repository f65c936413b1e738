//! Host batches onto the compute device: every step's images and labels.
//!
//! burn-tch uploads host values from ordinary (pageable) memory. On a CUDA device that copy is
//! synchronous: CUDA waits for the stream's queued work before it starts, so every training step
//! made the host wait for the GPU twice (images, labels). At batch 1, the paper's regime, the step
//! is launch-bound, and the host could no longer queue the next step's kernels while the GPU ran
//! this one's. PyTorch scripts avoid that with pinned memory and `non_blocking=True`
//! (`DataLoader(pin_memory=True)`).
//!
//! [`float_to_device`] and [`int_to_device`] do the same on libtorch's CUDA devices
//! (`crate::upload_torch`): the values are copied once into page-locked memory from libtorch's
//! caching host allocator, and the device copy is queued on the stream without waiting. The
//! allocator does not hand that block out again before the copy has finished. Everywhere else
//! (flex, libtorch's CPU) it is Burn's `Tensor::from_data`, unchanged.
//!
//! [`HostUploads`] (`NDHTL_HOST_UPLOADS`) can ask for burn-tch's pageable copy on CUDA too: for
//! side-by-side benchmarks (`ndhtl bench`, `train_b1_stl_pageable_uploads`) and as a way back
//! without a rebuild.

use std::borrow::Cow;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::process_setting::{self, ProcessSetting};

/// How host values reach a CUDA device (`NDHTL_HOST_UPLOADS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostUploads {
    /// Pinned memory and an asynchronous copy on libtorch's CUDA devices. The default.
    #[default]
    Auto,
    /// burn-tch's synchronous copy from pageable memory everywhere.
    Pageable,
}

static MODE: ProcessSetting<HostUploads> =
    ProcessSetting::new(&[HostUploads::Auto, HostUploads::Pageable]);

impl HostUploads {
    /// This process's setting ([`HostUploads::Auto`] unless set).
    pub fn current() -> Self {
        MODE.current()
    }

    /// Makes it this process's setting; returns the previous one.
    pub fn apply(self) -> Self {
        MODE.replace(self)
    }

    /// The setting `NDHTL_HOST_UPLOADS` asks for ([`HostUploads::Auto`] when unset).
    pub fn from_environment() -> Result<Self, UnknownHostUploads> {
        process_setting::from_environment("NDHTL_HOST_UPLOADS")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("NDHTL_HOST_UPLOADS=`{0}`: expected `auto` (the default) or `pageable`")]
pub struct UnknownHostUploads(String);

impl std::str::FromStr for HostUploads {
    type Err = UnknownHostUploads;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" | "" => Ok(HostUploads::Auto),
            "pageable" => Ok(HostUploads::Pageable),
            other => Err(UnknownHostUploads(other.to_string())),
        }
    }
}

/// `values` (row-major, `shape`) as a float tensor on `device`, autodiff included when the
/// device has it. Owned values move into the tensor where the backend can take them; borrowed
/// ones are copied once.
pub fn float_to_device<'a, const D: usize>(
    values: impl Into<Cow<'a, [f32]>>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    let values = values.into();
    debug_assert_eq!(values.len(), shape.iter().product::<usize>(), "{shape:?}");
    #[cfg(feature = "tch")]
    if let Some(tensor) = crate::upload_torch::pinned_float(&values, shape, device) {
        return tensor;
    }
    Tensor::from_data(TensorData::new(values.into_owned(), shape), device)
}

/// `values` (row-major, `shape`) as an integer tensor on `device`; see [`float_to_device`].
pub fn int_to_device<'a, const D: usize>(
    values: impl Into<Cow<'a, [i64]>>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Int> {
    let values = values.into();
    debug_assert_eq!(values.len(), shape.iter().product::<usize>(), "{shape:?}");
    #[cfg(feature = "tch")]
    if let Some(tensor) = crate::upload_torch::pinned_int(&values, shape, device) {
        return tensor;
    }
    Tensor::from_data(TensorData::new(values.into_owned(), shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses_from_its_two_names_and_rejects_others_by_name() {
        assert_eq!("auto".parse::<HostUploads>().unwrap(), HostUploads::Auto);
        assert_eq!("".parse::<HostUploads>().unwrap(), HostUploads::Auto);
        assert_eq!(
            "pageable".parse::<HostUploads>().unwrap(),
            HostUploads::Pageable
        );
        let error = "pinned".parse::<HostUploads>().unwrap_err();
        assert!(
            error.to_string().contains("NDHTL_HOST_UPLOADS=`pinned`"),
            "{error}"
        );
    }
}
