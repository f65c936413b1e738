//! The CIFAR AlexNet, its STL head and the NDHTL plastic head.

pub mod alexnet;
pub mod clamp;
pub mod conv;
mod conv_flex;
pub mod conv_host;
mod conv_host_node;
#[cfg(feature = "tch")]
mod conv_torch;
#[cfg(feature = "tch")]
mod conv_torch_host;
pub mod cross_entropy;
pub mod init;
pub mod io;
pub mod loss;
pub mod plastic;
pub mod relu;
pub mod softmax;

pub use alexnet::{AlexNetFeatures, CifarAlexNet, FEATURE_DIM, new_classifier};
pub use loss::LossKind;
pub use plastic::{
    HebbianState, PlasticConfig, PlasticParams, PlasticStep, PlasticityRule, PostActivity,
    TraceMode,
};
