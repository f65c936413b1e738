//! The fused SGD ([`FusedSgd`]) against hand-computed values and against Burn's own `Sgd`: the
//! same parameters bit for bit after several steps of the real network (with weight decay on
//! the features and W, b, none on the plastic parameters), on every path (host loop, in-place
//! ATen, tensor ops); optimizer checkpoints of either load into the other; and the fused path
//! really runs where it should.
//!
//! Runs on flex, or on the device `NDHTL_TEST_DEVICE` names (`tch:cpu`, `tch:cuda:0`).

use burn::module::{ModuleVisitor, Param, ParamGroup};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ndhtl_agent::device::{BackendKind, ComputeDevice};
use ndhtl_agent::model::loss::cross_entropy;
use ndhtl_agent::model::{CifarAlexNet, HebbianState, PlasticConfig, PlasticParams};
use ndhtl_agent::train::optimizer::host::{HostThreads, host_sgd_update};
use ndhtl_agent::train::optimizer::{
    SgdHyper, SgdKernel, SgdPathCounts, build_optimizer_with, sgd_path_counts, step_and_apply,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MOMENTUM: f64 = 0.9;
const WEIGHT_DECAY: f64 = 5e-4;
const CLASSES: usize = 10;

fn test_device() -> ComputeDevice {
    ComputeDevice::for_tests()
}

#[test]
fn host_loop_matches_hand_computed_values() {
    let hyper = SgdHyper {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.01,
    };
    // d = p·wd + g; v = d + v·μ; p = p − v·lr.
    //   [0]: d = 1·0.01 + 0.5 = 0.51;     v = 0.51 + 0.1·0.9 = 0.6;    p = 1 − 0.06 = 0.94
    //   [1]: d = −2·0.01 + 0.25 = 0.23;   v = 0.23 − 0.2·0.9 = 0.05;   p = −2 − 0.005 = −2.005
    let mut param = [1.0f32, -2.0];
    let mut grad = [0.5f32, 0.25];
    let mut velocity = [0.1f32, -0.2];
    host_sgd_update(
        hyper,
        &mut param,
        &mut grad,
        Some(&mut velocity),
        false,
        HostThreads::Caller,
    );
    assert_close(&velocity, &[0.6, 0.05]);
    assert_close(&param, &[0.94, -2.005]);
    assert_eq!(grad, [0.5, 0.25], "the gradient is read, not written");

    // First step: v = d, written into the gradient's buffer, which becomes the velocity.
    let mut param = [1.0f32, -2.0];
    let mut grad = [0.5f32, 0.25];
    host_sgd_update(
        hyper,
        &mut param,
        &mut grad,
        None,
        true,
        HostThreads::Caller,
    );
    assert_close(&grad, &[0.51, 0.23]);
    assert_close(&param, &[1.0 - 0.051, -2.0 - 0.023]);

    // No momentum and no weight decay: p = p − g·lr.
    let plain = SgdHyper {
        lr: 0.5,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let mut param = [1.0f32, -2.0, 3.0];
    let mut grad = [0.5f32, 0.25, -1.0];
    host_sgd_update(
        plain,
        &mut param,
        &mut grad,
        None,
        false,
        HostThreads::Rayon,
    );
    assert_close(&param, &[0.75, -2.125, 3.5]);
}

#[test]
fn host_loop_splits_long_buffers_without_changing_a_value() {
    // Longer than one parallel chunk, with a ragged last chunk: every element must get the
    // same update as the scalar formula.
    let hyper = SgdHyper {
        lr: 1e-2,
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    let len = (1 << 15) * 3 + 17;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut draw = || -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let (mut param, mut grad, mut velocity) = (draw(), draw(), draw());
    let expected: Vec<(f32, f32)> = (0..len)
        .map(|i| {
            let v = (param[i] * hyper.weight_decay + grad[i]) + velocity[i] * hyper.momentum;
            (param[i] - v * hyper.lr, v)
        })
        .collect();
    host_sgd_update(
        hyper,
        &mut param,
        &mut grad,
        Some(&mut velocity),
        false,
        HostThreads::Rayon,
    );
    for (i, (p, v)) in expected.into_iter().enumerate() {
        assert_eq!(param[i].to_bits(), p.to_bits(), "param[{i}]");
        assert_eq!(velocity[i].to_bits(), v.to_bits(), "velocity[{i}]");
    }
}

fn assert_close(actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len());
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(a) - e).abs() <= 1e-6 * e.abs().max(1.0),
            "[{i}]: {a} vs {e}"
        );
    }
}

/// Burn's `Sgd` as ndhtl configured it before [`FusedSgd`]: PyTorch's convention (dampening 0),
/// weight decay off for the plastic group.
fn burn_sgd(model: &CifarAlexNet) -> ModuleOptimizer {
    let config = |weight_decay: f32| {
        let momentum = MomentumConfig::new()
            .with_momentum(MOMENTUM)
            .with_dampening(0.0)
            .with_nesterov(false);
        let config = SgdConfig::new().with_momentum(Some(momentum));
        if weight_decay > 0.0 {
            config.with_weight_decay(Some(WeightDecayConfig::new(weight_decay)))
        } else {
            config
        }
    };
    let optimizer = ModuleOptimizer::from(config(WEIGHT_DECAY as f32).build());
    match &model.plastic {
        Some(plastic) => optimizer.with_group(
            ParamGroup::ids_from_module(plastic.clone()),
            config(0.0).build(),
            None,
        ),
        None => optimizer,
    }
}

/// The same network each call (fixed seeds), in buffers of its own: a clone would share them,
/// and an optimizer that updates in place must then copy first.
fn plastic_model(device: &Device) -> CifarAlexNet {
    let mut model = CifarAlexNet::new(CLASSES, 4, device);
    model.plastic = Some(PlasticParams::new(CLASSES, 0.1, true, 4, device));
    model
}

struct Collect(Vec<Vec<u32>>);
impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = param
            .val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        self.0.push(values.into_iter().map(f32::to_bits).collect());
    }
}

/// Every parameter's bits, in module order.
fn parameter_bits(model: &CifarAlexNet) -> Vec<Vec<u32>> {
    let mut collect = Collect(Vec::new());
    burn::module::Module::visit(model, &mut collect);
    collect.0
}

/// `windows` NDHTL windows of `k` steps (so every plastic parameter gets a gradient), each
/// ended by `optimizer.step`, on images and labels drawn from `seed`.
fn train(
    mut model: CifarAlexNet,
    optimizer: &mut ModuleOptimizer,
    windows: usize,
    device: &Device,
) -> CifarAlexNet {
    let k = 3;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let config = PlasticConfig {
        fanout: true,
        ..PlasticConfig::default()
    };
    let mut hebbian = HebbianState::zeros(1, CLASSES, device);
    for window in 0..windows {
        let mut loss: Option<Tensor<1>> = None;
        for _ in 0..k {
            let pixels: Vec<f32> = (0..3 * 32 * 32)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, 32, 32]), device);
            let label = rng.random_range(0..CLASSES as i64);
            let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![label], [1]), device);
            let features = model.features.forward(images);
            let output = model.plastic_step(features, hebbian, &config);
            hebbian = output.state;
            let step_loss = cross_entropy(output.logits, targets);
            loss = Some(match loss {
                Some(sum) => sum + step_loss,
                None => step_loss,
            });
        }
        let gradients = GradientsParams::from_grads(loss.unwrap().backward(), &model);
        // Alternate learning rates: the scheduler's value must reach every path.
        let lr = if window % 2 == 0 { 1e-2 } else { 3e-3 };
        model = step_and_apply(optimizer, lr, model, gradients);
        hebbian = hebbian.detach();
    }
    model
}

fn kernels_to_check(device: &ComputeDevice) -> Vec<SgdKernel> {
    match device.backend {
        BackendKind::Tch => vec![
            SgdKernel::Auto,
            SgdKernel::InPlaceTorch,
            SgdKernel::TensorOps,
        ],
        BackendKind::Flex => vec![SgdKernel::Auto, SgdKernel::TensorOps],
    }
}

#[test]
fn every_path_equals_burns_sgd_bit_for_bit() {
    let device = test_device();
    let training = device.autodiff();
    let start = plastic_model(&training);
    let mut reference_optimizer = burn_sgd(&start);
    let reference = parameter_bits(&train(
        start.clone(),
        &mut reference_optimizer,
        4,
        &training,
    ));
    let initial = parameter_bits(&start);
    let moved = reference
        .iter()
        .zip(&initial)
        .filter(|(after, before)| after != before)
        .count();
    assert_eq!(
        moved,
        initial.len(),
        "every parameter (convolutions, W, b, α, η, modulator, fan-out) must change"
    );
    for kernel in kernels_to_check(&device) {
        let mut optimizer = build_optimizer_with(&start, MOMENTUM, WEIGHT_DECAY, kernel);
        let trained = parameter_bits(&train(start.clone(), &mut optimizer, 4, &training));
        for (index, (ours, theirs)) in trained.iter().zip(&reference).enumerate() {
            assert!(
                ours == theirs,
                "{kernel:?} on {}: parameter {index} differs from Burn's Sgd",
                device.label()
            );
        }
    }
}

#[test]
fn without_momentum_or_weight_decay_every_path_equals_burns_sgd() {
    let device = test_device();
    let training = device.autodiff();
    let start = plastic_model(&training);
    let mut reference_optimizer = ModuleOptimizer::from(SgdConfig::new().build());
    let reference = parameter_bits(&train(
        start.clone(),
        &mut reference_optimizer,
        2,
        &training,
    ));
    for kernel in kernels_to_check(&device) {
        let mut optimizer = build_optimizer_with(&start, 0.0, 0.0, kernel);
        let trained = parameter_bits(&train(start.clone(), &mut optimizer, 2, &training));
        assert!(trained == reference, "{kernel:?}: differs from plain SGD");
    }
}

#[test]
fn optimizer_checkpoints_load_across_burns_sgd_and_the_fused_one() {
    let device = test_device();
    let training = device.autodiff();
    let start = plastic_model(&training);

    // Two windows under Burn's Sgd, saved; then one more under each, resumed from the bytes.
    let mut burn_optimizer = burn_sgd(&start);
    let midway = train(start.clone(), &mut burn_optimizer, 2, &training);
    let burn_bytes = burn_optimizer.into_bytes().unwrap();
    let mut fused_from_burn = build_optimizer_with(&start, MOMENTUM, WEIGHT_DECAY, SgdKernel::Auto)
        .from_bytes(burn_bytes.clone())
        .unwrap();
    let mut burn_resumed = burn_sgd(&start).from_bytes(burn_bytes).unwrap();
    let expected = parameter_bits(&train(midway.clone(), &mut burn_resumed, 1, &training));
    let actual = parameter_bits(&train(midway.clone(), &mut fused_from_burn, 1, &training));
    assert!(
        actual == expected,
        "the fused optimizer resumed from Burn's state differs"
    );

    // And the other way: the fused optimizer's record loads into Burn's Sgd.
    let mut fused = build_optimizer_with(&start, MOMENTUM, WEIGHT_DECAY, SgdKernel::Auto);
    let midway = train(start.clone(), &mut fused, 2, &training);
    let fused_bytes = fused.into_bytes().unwrap();
    let mut burn_from_fused = burn_sgd(&start).from_bytes(fused_bytes.clone()).unwrap();
    let mut fused_resumed = build_optimizer_with(&start, MOMENTUM, WEIGHT_DECAY, SgdKernel::Auto)
        .from_bytes(fused_bytes)
        .unwrap();
    let expected = parameter_bits(&train(midway.clone(), &mut fused_resumed, 1, &training));
    let actual = parameter_bits(&train(midway, &mut burn_from_fused, 1, &training));
    assert!(
        actual == expected,
        "Burn's Sgd resumed from the fused state differs"
    );
}

fn counts_during(run: impl FnOnce()) -> SgdPathCounts {
    let before = sgd_path_counts();
    run();
    let after = sgd_path_counts();
    SgdPathCounts {
        host_loop: after.host_loop - before.host_loop,
        inplace_torch: after.inplace_torch - before.inplace_torch,
        tensor_ops: after.tensor_ops - before.tensor_ops,
    }
}

#[test]
fn the_fused_paths_really_run() {
    let device = test_device();
    let training = device.autodiff();
    let start = plastic_model(&training);
    let parameters = parameter_bits(&start).len() as u64;
    let windows = 3;
    let updates = parameters * windows as u64;

    let run = |kernel| {
        counts_during(|| {
            let model = plastic_model(&training);
            let mut optimizer = build_optimizer_with(&model, MOMENTUM, WEIGHT_DECAY, kernel);
            let _ = train(model, &mut optimizer, windows, &training);
        })
    };
    let auto = run(SgdKernel::Auto);
    if device.is_gpu() {
        assert_eq!(auto.inplace_torch, updates, "{auto:?}");
    } else {
        assert_eq!(
            auto,
            SgdPathCounts {
                host_loop: updates,
                ..SgdPathCounts::default()
            },
            "on {} every update must take the host loop",
            device.label()
        );
    }
    let reference = run(SgdKernel::TensorOps);
    assert_eq!(reference.tensor_ops, updates, "{reference:?}");
    if device.backend == BackendKind::Tch {
        let inplace = run(SgdKernel::InPlaceTorch);
        assert_eq!(inplace.inplace_torch, updates, "{inplace:?}");
    }
}

#[test]
fn the_sgd_setting_parses_from_its_names_and_rejects_others_by_name() {
    assert_eq!("auto".parse::<SgdKernel>().unwrap(), SgdKernel::Auto);
    assert_eq!("".parse::<SgdKernel>().unwrap(), SgdKernel::Auto);
    assert_eq!(
        "aten".parse::<SgdKernel>().unwrap(),
        SgdKernel::InPlaceTorch
    );
    assert_eq!("burn".parse::<SgdKernel>().unwrap(), SgdKernel::TensorOps);
    let error = "fused".parse::<SgdKernel>().unwrap_err();
    assert!(error.to_string().contains("NDHTL_SGD=`fused`"), "{error}");
}
