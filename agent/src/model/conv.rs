//! The network's convolutions, as one backend extension so that each backend computes them
//! and their gradients its fastest way.
//!
//! Burn differentiates `conv2d` with its own formulas: a transposed convolution for the input
//! gradient and a convolution over the swapped batch and channel axes for the weight gradient,
//! and its flex convolution multiplies each sample by the weights apart, which for the
//! AlexNet's small later layers is a product of 4 or 16 columns per sample.
//!
//! So on flex every convolution takes ndhtl's batched host convolution ([`super::conv_host`]:
//! one matrix product per chunk of samples; wired in `super::conv_flex`), forward and as one
//! autodiff node for the three gradients: measured on the 2-core CPU (README, "Benchmark"), a
//! whole batch-1 STL step 2.6–3.7× faster than with Burn's, batch 128 1.7–1.9×. On libtorch's
//! CPU the host convolution takes batch 1 (`super::conv_torch_host`; about 1.7× ATen's on one
//! thread), ATen's backward (oneDNN) batches up to [`CPU_LARGEST_BATCH_FOR_ATEN`], and Burn's
//! formulas larger ones; on a GPU, libtorch's forward and ATen's own convolution backward
//! (cuDNN), one node (`super::conv_torch`).
//!
//! [`ConvolutionGradients`] (`NDHTL_CONV_GRADIENTS`) overrides that choice: for side-by-side
//! benchmarks (`ndhtl bench`, the `*_burn_conv*` and `*_aten_conv` workloads), tests, and as a
//! way back without a rebuild.
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchTensorKind, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::process_setting::{self, ProcessSetting};

/// A 2-D convolution with a bias. The default body is Burn's; flex (`super::conv_flex`) and
/// libtorch (`super::conv_torch`) replace it.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait ConvolutionBackend: Backend {
    fn conv2d_with_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), options)
    }
}

/// Who computes the convolutions and their gradients (`NDHTL_CONV_GRADIENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvolutionGradients {
    /// ndhtl's host convolution on the CPU (flex and libtorch), libtorch's forward and ATen's
    /// backward on a GPU. The default.
    #[default]
    Auto,
    /// The backend's own kernels: on libtorch its forward and ATen's backward on every device
    /// (what a GPU runs; the op census counts this path on the CPU); flex has none of its own
    /// beyond Burn's, so there the host convolution as under `Auto`.
    Backend,
    /// Burn's `conv2d` and its formulas on every backend.
    Burn,
}

/// How one convolution on libtorch is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibTorchConvolution {
    /// ndhtl's host convolution on libtorch's CPU memory (`super::conv_torch_host`).
    Host,
    /// libtorch's forward and ATen's `convolution_backward`, one autodiff node.
    Aten,
    /// Burn's `conv2d` on libtorch (ATen's forward) and Burn's gradient formulas.
    Burn,
}

/// On libtorch's CPU, the largest batch for which [`ConvolutionGradients::Auto`] takes the host
/// convolution. Measured on the 2-core AVX-512 CPU (2026-12-07, STL steps, images/s, host vs
/// ATen's): batch 1 142–152 vs 80–90 on one thread, 105–123 vs 90–124 on two; batch 2 193 vs
/// 212 on one thread, 227 vs 146 on two; batch 4 340 vs 355 and 292 vs 399; batch 8 475 vs 469
/// and 497 vs 611. So the paper's batch-1 regime only.
pub const CPU_LARGEST_BATCH_FOR_HOST: usize = 1;

/// On libtorch's CPU, the largest batch for which [`ConvolutionGradients::Auto`] takes ATen's
/// convolution backward; above it, libtorch's forward (oneDNN) and Burn's gradient formulas.
/// Measured (2 cores, AVX-512, 2 threads, STL steps): ATen 174 vs Burn 130 images/s at
/// batch 2, 460 vs 460 at 8, 1028 vs 1171 at 32, 1469 vs 1629 at 64; 2026-12-07: 611 vs 547 at
/// 8, 1632 vs 1981 at 128.
pub const CPU_LARGEST_BATCH_FOR_ATEN: usize = 8;

static MODE: ProcessSetting<ConvolutionGradients> = ProcessSetting::new(&[
    ConvolutionGradients::Auto,
    ConvolutionGradients::Backend,
    ConvolutionGradients::Burn,
]);

impl ConvolutionGradients {
    /// This process's setting ([`ConvolutionGradients::Auto`] unless set).
    pub fn current() -> Self {
        MODE.current()
    }

    /// Makes it this process's setting; returns the previous one.
    pub fn apply(self) -> Self {
        MODE.replace(self)
    }

    /// The setting `NDHTL_CONV_GRADIENTS` asks for ([`ConvolutionGradients::Auto`] when unset).
    pub fn from_environment() -> Result<Self, UnknownConvolutionGradients> {
        process_setting::from_environment("NDHTL_CONV_GRADIENTS")
    }

    /// How a convolution of a batch of `batch` on libtorch, on a GPU or the CPU, is computed.
    pub fn libtorch(self, batch: usize, on_gpu: bool) -> LibTorchConvolution {
        match (self, on_gpu) {
            (ConvolutionGradients::Burn, _) => LibTorchConvolution::Burn,
            (ConvolutionGradients::Backend, _) | (ConvolutionGradients::Auto, true) => {
                LibTorchConvolution::Aten
            }
            (ConvolutionGradients::Auto, false) if batch <= CPU_LARGEST_BATCH_FOR_HOST => {
                LibTorchConvolution::Host
            }
            (ConvolutionGradients::Auto, false) if batch <= CPU_LARGEST_BATCH_FOR_ATEN => {
                LibTorchConvolution::Aten
            }
            (ConvolutionGradients::Auto, false) => LibTorchConvolution::Burn,
        }
    }

    /// Whether a convolution on flex takes the batched host convolution: at every batch size
    /// unless Burn's is asked for. Measured on the 2-core CPU (2026-12-07, README "Benchmark"),
    /// it makes a whole STL step 2.8× faster at batch 1 and 1.9× at batch 128.
    pub fn flex_host(self) -> bool {
        self != ConvolutionGradients::Burn
    }
}

#[derive(Debug, thiserror::Error)]
#[error("NDHTL_CONV_GRADIENTS=`{0}`: expected `auto` (the default), `backend` or `burn`")]
pub struct UnknownConvolutionGradients(String);

impl std::str::FromStr for ConvolutionGradients {
    type Err = UnknownConvolutionGradients;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" | "" => Ok(ConvolutionGradients::Auto),
            "backend" => Ok(ConvolutionGradients::Backend),
            "burn" => Ok(ConvolutionGradients::Burn),
            other => Err(UnknownConvolutionGradients(other.to_string())),
        }
    }
}

/// `conv.forward(input)` with the same options and values (within rounding), through
/// [`ConvolutionBackend`].
///
/// Convolutions without a bias, or with padding that depends on the input size, take Burn's
/// `Conv2d::forward` (the network has neither).
pub fn conv2d(conv: &Conv2d, input: Tensor<4>) -> Tensor<4> {
    let mode = ConvolutionGradients::current();
    if mode == ConvolutionGradients::Burn {
        return conv.forward(input);
    }
    let Some(options) = symmetric_options(conv) else {
        return conv.forward(input);
    };
    let Some(bias) = conv.bias.as_ref() else {
        return conv.forward(input);
    };
    let input = input.into_dispatch();
    // libtorch's extension chooses by batch and device itself (`conv_torch`).
    let takes_extension = match backend_of(&input.kind) {
        Some(ExtendedBackend::LibTorch) => true,
        Some(ExtendedBackend::Flex) => mode.flex_host(),
        None => false,
    };
    if !takes_extension {
        return conv.forward(Tensor::from_dispatch(input));
    }
    let output = <Dispatch as ConvolutionBackend>::conv2d_with_bias(
        input,
        conv.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
        options,
    );
    Tensor::from_dispatch(output)
}

/// The backends with a convolution of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtendedBackend {
    Flex,
    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    LibTorch,
}

/// Which of them a tensor lives on, with or without autodiff.
fn backend_of(kind: &DispatchTensorKind) -> Option<ExtendedBackend> {
    match kind {
        DispatchTensorKind::Autodiff(inner) => backend_of(inner),
        DispatchTensorKind::Flex(_) => Some(ExtendedBackend::Flex),
        #[cfg(feature = "tch")]
        DispatchTensorKind::LibTorch(_) => Some(ExtendedBackend::LibTorch),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The convolution's options when its padding is the same on both sides of each axis.
fn symmetric_options(conv: &Conv2d) -> Option<ConvOptions<2>> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return None,
    };
    Some(ConvOptions::new(
        conv.stride,
        padding,
        conv.dilation,
        conv.groups,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses_from_its_three_names_and_rejects_others_by_name() {
        assert_eq!(
            "auto".parse::<ConvolutionGradients>().unwrap(),
            ConvolutionGradients::Auto
        );
        assert_eq!(
            "".parse::<ConvolutionGradients>().unwrap(),
            ConvolutionGradients::Auto
        );
        assert_eq!(
            "backend".parse::<ConvolutionGradients>().unwrap(),
            ConvolutionGradients::Backend
        );
        assert_eq!(
            "burn".parse::<ConvolutionGradients>().unwrap(),
            ConvolutionGradients::Burn
        );
        let error = "aten".parse::<ConvolutionGradients>().unwrap_err();
        assert!(
            error.to_string().contains("NDHTL_CONV_GRADIENTS=`aten`"),
            "{error}"
        );
    }

    #[test]
    fn on_libtorch_auto_takes_host_aten_or_burn_by_cpu_batch_and_aten_on_a_gpu() {
        use LibTorchConvolution::{Aten, Burn, Host};
        let host = CPU_LARGEST_BATCH_FOR_HOST;
        let aten = CPU_LARGEST_BATCH_FOR_ATEN;
        assert!(host < aten);
        for (batch, on_cpu) in [(1, Host), (host, Host), (host + 1, Aten), (aten, Aten)] {
            assert_eq!(ConvolutionGradients::Auto.libtorch(batch, false), on_cpu);
        }
        for batch in [1, host + 1, aten, aten + 1, 128] {
            if batch > aten {
                assert_eq!(ConvolutionGradients::Auto.libtorch(batch, false), Burn);
            }
            assert_eq!(ConvolutionGradients::Auto.libtorch(batch, true), Aten);
            let backend = ConvolutionGradients::Backend;
            assert_eq!(backend.libtorch(batch, false), Aten);
            assert_eq!(backend.libtorch(batch, true), Aten);
            let burn = ConvolutionGradients::Burn;
            assert_eq!(burn.libtorch(batch, false), Burn);
            assert_eq!(burn.libtorch(batch, true), Burn);
        }
    }

    #[test]
    fn flex_takes_the_host_convolution_unless_burns_is_asked_for() {
        assert!(ConvolutionGradients::Auto.flex_host());
        assert!(ConvolutionGradients::Backend.flex_host());
        assert!(!ConvolutionGradients::Burn.flex_host());
    }
}
