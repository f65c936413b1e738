//! The CIFAR AlexNet of \[90\] (bearpaw/pytorch-classification), spec §2.
//!
//! Conv(3→64, k11, s4, p5)–ReLU–MaxPool2; Conv(64→192, k5, p2)–ReLU–MaxPool2;
//! Conv(192→384, k3, p1)–ReLU; Conv(384→256, k3, p1)–ReLU; Conv(256→256, k3, p1)–ReLU–MaxPool2;
//! flatten to 256 features. No batch norm, no dropout, no hidden FC layer.
//!
//! The classifier `W ∈ ℝ^{D×C}`, `b ∈ ℝ^C` is a [`Linear`] (row layout, so `weight` is `D×C`).
//! An NDHTL model adds [`PlasticParams`]; the STL model leaves them out.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::conv::conv2d;
use super::init::{InitStream, default_bound, init_rng, uniform_param};
use super::plastic::PlasticParams;
use super::relu::relu;

/// Number of features the conv stack produces (spec §2, D = 256).
pub const FEATURE_DIM: usize = 256;

/// The five convolutions.
#[derive(Module, Debug)]
pub struct AlexNetFeatures {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub conv3: Conv2d,
    pub conv4: Conv2d,
    pub conv5: Conv2d,
    pub pool: MaxPool2d,
}

/// (in, out, kernel, stride, padding) of conv1..conv5.
pub const CONV_LAYOUT: [(usize, usize, usize, usize, usize); 5] = [
    (3, 64, 11, 4, 5),
    (64, 192, 5, 1, 2),
    (192, 384, 3, 1, 1),
    (384, 256, 3, 1, 1),
    (256, 256, 3, 1, 1),
];

impl AlexNetFeatures {
    /// PyTorch-default initialisation from `seed`'s features stream.
    pub fn new(seed: u64, device: &Device) -> Self {
        let mut rng = init_rng(seed, InitStream::Features);
        let mut convs = CONV_LAYOUT.iter().map(|&(cin, cout, k, stride, pad)| {
            let mut conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device);
            let bound = default_bound(cin * k * k);
            conv.weight = uniform_param(&mut rng, [cout, cin, k, k], -bound, bound, device);
            conv.bias = Some(uniform_param(&mut rng, [cout], -bound, bound, device));
            conv
        });
        let mut next = || convs.next().expect("five convolutions");
        AlexNetFeatures {
            conv1: next(),
            conv2: next(),
            conv3: next(),
            conv4: next(),
            conv5: next(),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// `B×3×32×32` images → `B×256` non-negative features.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(conv2d(&self.conv1, images)));
        let x = self.pool.forward(relu(conv2d(&self.conv2, x)));
        let x = relu(conv2d(&self.conv3, x));
        let x = relu(conv2d(&self.conv4, x));
        let x = self.pool.forward(relu(conv2d(&self.conv5, x)));
        x.flatten(1, 3)
    }
}

/// The whole network: features, classifier, and (NDHTL only) the plastic parameters.
#[derive(Module, Debug)]
pub struct CifarAlexNet {
    pub features: AlexNetFeatures,
    pub classifier: Linear,
    pub plastic: Option<PlasticParams>,
}

/// A fresh `Linear(256 → classes)` with PyTorch's default initialisation from `seed`.
pub fn new_classifier(num_classes: usize, seed: u64, device: &Device) -> Linear {
    let mut rng = init_rng(seed, InitStream::Classifier);
    let mut classifier = LinearConfig::new(FEATURE_DIM, num_classes).init(device);
    let bound = default_bound(FEATURE_DIM);
    classifier.weight = uniform_param(&mut rng, [FEATURE_DIM, num_classes], -bound, bound, device);
    classifier.bias = Some(uniform_param(
        &mut rng,
        [num_classes],
        -bound,
        bound,
        device,
    ));
    classifier
}

impl CifarAlexNet {
    /// A randomly initialised plain network (source training).
    pub fn new(num_classes: usize, seed: u64, device: &Device) -> Self {
        CifarAlexNet {
            features: AlexNetFeatures::new(seed, device),
            classifier: new_classifier(num_classes, seed, device),
            plastic: None,
        }
    }

    pub fn num_classes(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// Plain logits `Z = X W + b` (STL head; also the source model).
    ///
    /// Written as `matmul + bias` rather than `Linear::forward` so that NDHTL with a zero
    /// Hebbian term performs exactly the same floating-point operations (spec §9.5).
    pub fn linear_logits(&self, features: Tensor<2>) -> Tensor<2> {
        let bias = self
            .classifier
            .bias
            .as_ref()
            .expect("classifier has a bias")
            .val();
        features.matmul(self.classifier.weight.val()) + bias.unsqueeze_dim(0)
    }

    /// Source-model forward pass: images → logits.
    pub fn forward_linear(&self, images: Tensor<4>) -> Tensor<2> {
        self.linear_logits(self.features.forward(images))
    }
}
