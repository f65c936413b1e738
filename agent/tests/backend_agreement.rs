//! The `tch` (libtorch) and `flex` (pure Rust) backends agree, with the same weights and the
//! same inputs: on one plastic step, on the gradients of a K-step window, and on a whole
//! fine-tune lifetime of STL and of NDHTL. Weights are drawn on the host (seeded ChaCha), so
//! both backends start from identical numbers. Built only with `--features tch`; CI runs it
//! against the CPU libtorch of the torch wheel.
#![cfg(feature = "tch")]

use std::path::Path;

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ndhtl_agent::data::TaskSpec;
use ndhtl_agent::data::synth::{SynthOptions, write_synthetic};
use ndhtl_agent::device::ComputeDevice;
use ndhtl_agent::model::loss::cross_entropy;
use ndhtl_agent::model::{
    AlexNetFeatures, CifarAlexNet, FEATURE_DIM, HebbianState, PlasticConfig, PlasticParams,
};
use ndhtl_agent::train::{CancelToken, FinetuneConfig, Method, NoObserver, TaskData, run_finetune};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/tensors.rs"]
mod tensors;
use tensors::{host, worst_difference};

const D: usize = FEATURE_DIM;
const C: usize = 5;

fn flex() -> ComputeDevice {
    ComputeDevice::from_label("flex:cpu").unwrap()
}

/// libtorch on the CPU, or the device `NDHTL_TEST_DEVICE` names when it is a tch one.
fn tch() -> ComputeDevice {
    match std::env::var("NDHTL_TEST_DEVICE") {
        Ok(label) if label.starts_with("tch:") => ComputeDevice::from_label(&label).unwrap(),
        _ => ComputeDevice::from_label("tch:cpu").unwrap(),
    }
}

fn random_tensor<const N: usize>(
    seed: u64,
    shape: [usize; N],
    low: f32,
    high: f32,
    device: &Device,
) -> Tensor<N> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|_| rng.random_range(low..high)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The same plastic model on any device: every parameter drawn on the host.
fn model(fanout: bool, device: &Device) -> CifarAlexNet {
    let mut model = CifarAlexNet::new(C, 17, device);
    let mut plastic = PlasticParams::new(C, 0.3, fanout, 17, device);
    plastic.alpha = Param::from_tensor(random_tensor(1, [D, C], -1.0, 1.0, device));
    plastic.modulator.weight = Param::from_tensor(random_tensor(2, [C, 1], -2.0, 2.0, device));
    model.plastic = Some(plastic);
    model
}

fn assert_agree(what: &str, a: &[f64], b: &[f64], tolerance: f64) {
    let worst = worst_difference(a, b);
    eprintln!("{what}: worst relative difference {worst:e}");
    assert!(
        worst <= tolerance,
        "{what}: flex and tch differ by {worst:e} (> {tolerance:e})"
    );
}

/// Three plastic steps from a non-zero state: logits, Hebbian trace and eligibility.
fn plastic_steps(device: &Device, config: &PlasticConfig) -> Vec<Vec<f64>> {
    let model = model(config.fanout, device);
    let mut state = HebbianState {
        hebb: random_tensor(3, [1, D, C], -0.2, 0.2, device),
        elig: random_tensor(4, [1, D, C], 0.0, 0.6, device),
    };
    let mut out = Vec::new();
    for step in 0..3 {
        let x = random_tensor(10 + step, [2, D], 0.0, 1.0, device);
        let output = model.plastic_step(x, state, config);
        out.push(host(output.logits));
        out.push(host(output.state.hebb.clone()));
        out.push(host(output.state.elig.clone()));
        state = output.state;
    }
    out
}

#[test]
fn one_plastic_step_agrees() {
    for fanout in [false, true] {
        let config = PlasticConfig {
            clip: 0.5,
            fanout,
            ..PlasticConfig::default()
        };
        let on_flex = plastic_steps(&flex().device, &config);
        let on_tch = plastic_steps(&tch().device, &config);
        for (index, (a, b)) in on_flex.iter().zip(&on_tch).enumerate() {
            let what = ["logits", "hebb", "elig"][index % 3];
            assert_agree(
                &format!("fanout {fanout}, step {}: {what}", index / 3 + 1),
                b,
                a,
                1e-5,
            );
        }
    }
}

/// The summed loss of a K = 4 window and the gradients of every plastic parameter and W.
fn window_gradients(device: &Device) -> (f64, Vec<(&'static str, Vec<f64>)>) {
    let config = PlasticConfig {
        clip: 10.0,
        fanout: true,
        ..PlasticConfig::default()
    };
    let model = model(true, device);
    let mut state = HebbianState::zeros(1, C, device);
    let mut total: Option<Tensor<1>> = None;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for step in 0..4 {
        let x = random_tensor(30 + step, [1, D], 0.0, 1.0, device);
        let label = rng.random_range(0..C as i64);
        let y: Tensor<1, Int> = Tensor::from_data(TensorData::new(vec![label], [1]), device);
        let output = model.plastic_step(x, state, &config);
        state = output.state;
        let loss = cross_entropy(output.logits, y);
        total = Some(match total {
            Some(sum) => sum + loss,
            None => loss,
        });
    }
    let loss = total.unwrap();
    let value = host(loss.clone())[0];
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let plastic = model.plastic.as_ref().unwrap();
    let fanout = plastic.fanout.as_ref().unwrap();
    let get2 = |param: &Param<Tensor<2>>| host(grads.get::<2>(param.id).expect("a gradient"));
    let get1 = |param: &Param<Tensor<1>>| host(grads.get::<1>(param.id).expect("a gradient"));
    let gradients = vec![
        ("W", get2(&model.classifier.weight)),
        ("b", get1(model.classifier.bias.as_ref().unwrap())),
        ("alpha", get2(&plastic.alpha)),
        ("eta", get1(&plastic.eta)),
        ("modulator u", get2(&plastic.modulator.weight)),
        (
            "modulator c",
            get1(plastic.modulator.bias.as_ref().unwrap()),
        ),
        ("fan-out g", get2(&fanout.weight)),
    ];
    (value, gradients)
}

#[test]
fn a_k_window_gradient_agrees() {
    let (loss_flex, on_flex) = window_gradients(&flex().autodiff());
    let (loss_tch, on_tch) = window_gradients(&tch().autodiff());
    assert_agree("window loss", &[loss_tch], &[loss_flex], 1e-5);
    for ((name, a), (_, b)) in on_flex.iter().zip(&on_tch) {
        assert!(
            a.iter().any(|g| *g != 0.0),
            "{name}: a zero gradient proves nothing"
        );
        assert_agree(&format!("∂loss/∂{name}"), b, a, 1e-4);
    }
}

fn synth(dir: &Path) {
    write_synthetic(
        dir,
        &SynthOptions {
            seed: 2,
            cifar10_train_per_class: 2,
            cifar10_test_per_class: 10,
            cifar100_train_per_class: 12,
            cifar100_test_per_class: 10,
        },
    )
    .unwrap();
}

#[test]
fn a_whole_fine_tune_lifetime_agrees() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path());
    let task: TaskSpec = "T2".parse().unwrap();
    let data = TaskData::load(dir.path(), &task, None).unwrap();
    for method in [Method::Stl, Method::Ndhtl] {
        let config = FinetuneConfig {
            method,
            lifetimes: 1,
            lr: 1e-3,
            k: 5,
            seed: 9,
            ..FinetuneConfig::default()
        };
        let run = |device: &ComputeDevice| {
            run_finetune(
                &config,
                AlexNetFeatures::new(4, &device.device),
                "src",
                &data,
                device,
                None,
                &mut NoObserver,
                &CancelToken::new(),
            )
            .unwrap()
            .history
        };
        let on_flex = run(&flex());
        let on_tch = run(&tch());
        let (a, b) = (&on_flex[0], &on_tch[0]);
        // 120 SGD steps (or 24 NDHTL windows) at batch 1: float differences stay tiny.
        assert_eq!((a.steps, a.backward_passes), (b.steps, b.backward_passes));
        assert_agree(
            &format!("{method:?} losses"),
            &[b.train_loss, b.val_loss],
            &[a.train_loss, a.val_loss],
            1e-3,
        );
        assert!(
            (a.val_top1 - b.val_top1).abs() <= 1.0,
            "{method:?}: top-1 {} on flex, {} on tch (100 test images: one image is 1 point)",
            a.val_top1,
            b.val_top1
        );
        if method == Method::Ndhtl {
            assert_agree(
                "NDHTL diagnostics",
                &[
                    b.eta.unwrap(),
                    b.alpha_abs_mean.unwrap(),
                    b.hebb_abs_mean.unwrap(),
                ],
                &[
                    a.eta.unwrap(),
                    a.alpha_abs_mean.unwrap(),
                    a.hebb_abs_mean.unwrap(),
                ],
                1e-3,
            );
        }
    }
}
