//! The network's convolutions, as one backend extension so that each backend computes them
//! and their gradients its fastest way.
//!
//! Burn differentiates `conv2d` with its own formulas: a transposed convolution for the input
//! gradient and a convolution over the swapped batch and channel axes for the weight gradient.
//! On libtorch that leaves ATen's own convolution backward (oneDNN on the CPU, cuDNN on a GPU)
//! unused. Measured on the 2-core CPU (README, "Benchmark"): at batch 1, ATen's backward makes
//! a whole STL step about 25 % faster (most of it in the weight gradient); from batch 8 on,
//! Burn's formulas are as fast or faster (at batch 32–128 by 5–20 %).
//!
//! So with autodiff on libtorch, [`conv2d`] records small-batch convolutions on the CPU, and all
//! of them on a GPU, as one node whose backward asks libtorch for the gradients at once
//! ([`super::conv_torch`]).
//!
//! On flex, every convolution takes ndhtl's batched host convolution ([`super::conv_host`],
//! wired in `super::conv_flex`). Burn's flex convolution multiplies each sample by the weights
//! apart, which for the AlexNet's small later layers is a product of 4 or 16 columns per
//! sample, and differentiates it with the formulas above. Everywhere else it is Burn's
//! `Conv2d::forward`, unchanged.
//!
//! [`ConvolutionGradients`] (`NDHTL_CONV_GRADIENTS`) overrides that choice: for side-by-side
//! benchmarks (`ndhtl bench`, the `*_burn_conv_grads` and `infer_b1000_burn_conv` workloads),
//! tests, and as a way back without a rebuild.
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchTensorKind, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::process_setting::{self, ProcessSetting};

/// A 2-D convolution with a bias. The default body is Burn's; only autodiff on libtorch
/// replaces it.
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

// Flex's impls, the batched host convolution, are in `super::conv_flex`.

#[cfg(feature = "tch")]
impl ConvolutionBackend for burn::backend::LibTorch {}

/// Who computes the convolutions and their gradients (`NDHTL_CONV_GRADIENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvolutionGradients {
    /// libtorch's own backward on a GPU, and on the CPU up to batch
    /// [`CPU_LARGEST_BATCH_FOR_LIBTORCH`], Burn's above; on flex the batched host convolution.
    /// The default.
    #[default]
    Auto,
    /// The backend's own way at every batch size: libtorch's backward (with autodiff), flex's
    /// batched host convolution.
    Backend,
    /// Burn's `conv2d` and its formulas on every backend.
    Burn,
}

/// On the CPU, the largest batch for which libtorch's own convolution backward is used under
/// [`ConvolutionGradients::Auto`]. Measured (2 cores, AVX-512, 2 threads, STL steps): ATen
/// 174 vs Burn 130 images/s at batch 2, 460 vs 460 at 8, 1028 vs 1171 at 32, 1469 vs 1629 at 64.
pub const CPU_LARGEST_BATCH_FOR_LIBTORCH: usize = 8;

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

    /// Whether a convolution of a batch of `batch` on this device class takes libtorch's own
    /// backward.
    pub fn libtorch_backward(self, batch: usize, on_gpu: bool) -> bool {
        match self {
            ConvolutionGradients::Auto => on_gpu || batch <= CPU_LARGEST_BATCH_FOR_LIBTORCH,
            ConvolutionGradients::Backend => true,
            ConvolutionGradients::Burn => false,
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
    fn auto_takes_libtorch_on_a_gpu_and_on_the_cpu_up_to_the_measured_batch() {
        let auto = ConvolutionGradients::Auto;
        assert!(auto.libtorch_backward(1, false));
        assert!(auto.libtorch_backward(CPU_LARGEST_BATCH_FOR_LIBTORCH, false));
        assert!(!auto.libtorch_backward(CPU_LARGEST_BATCH_FOR_LIBTORCH + 1, false));
        assert!(!auto.libtorch_backward(128, false));
        assert!(auto.libtorch_backward(128, true));
        assert!(ConvolutionGradients::Backend.libtorch_backward(128, false));
        assert!(!ConvolutionGradients::Burn.libtorch_backward(1, true));
    }

    #[test]
    fn flex_takes_the_host_convolution_unless_burns_is_asked_for() {
        assert!(ConvolutionGradients::Auto.flex_host());
        assert!(ConvolutionGradients::Backend.flex_host());
        assert!(!ConvolutionGradients::Burn.flex_host());
    }
}
