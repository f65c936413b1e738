//! SGD with momentum in PyTorch's convention, with weight decay only where the spec puts it.
//!
//! PyTorch: `d = g + wd·p; v = μ·v + d` (v = d on the first step); `p ← p − lr·v`. Burn's
//! `MomentumConfig` defaults to dampening 0.1, so it is set to 0 explicitly here.

use burn::module::ParamGroup;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};

use crate::model::CifarAlexNet;

fn sgd(momentum: f64, weight_decay: f64) -> SgdConfig {
    let mut config = SgdConfig::new();
    if momentum > 0.0 {
        config = config.with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(momentum)
                .with_dampening(0.0)
                .with_nesterov(false),
        ));
    }
    if weight_decay > 0.0 {
        config = config.with_weight_decay(Some(WeightDecayConfig::new(weight_decay as f32)));
    }
    config
}

/// Weight decay on the conv parameters, W and b; none on α, η, the modulator and fan-out
/// (spec D-19).
pub fn build_optimizer(model: &CifarAlexNet, momentum: f64, weight_decay: f64) -> ModuleOptimizer {
    let optimizer = ModuleOptimizer::from(sgd(momentum, weight_decay).build());
    match &model.plastic {
        Some(plastic) => optimizer.with_group(
            ParamGroup::ids_from_module(plastic.clone()),
            sgd(momentum, 0.0).build(),
            None,
        ),
        None => optimizer,
    }
}
