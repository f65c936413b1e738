//! Spec §9, properties 1–4: the plastic layer against a plain loop implementation, batch-mean
//! and per-sample modes, which parameters get gradient for K = 1, 2, 3, and finite differences
//! through a K-step window.

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ndhtl_agent::model::loss::cross_entropy;
use ndhtl_agent::model::{
    CifarAlexNet, FEATURE_DIM, HebbianState, PlasticConfig, PlasticParams, PlasticityRule,
    PostActivity, TraceMode,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/tensors.rs"]
mod tensors;
use tensors::host;

const D: usize = FEATURE_DIM;
const C: usize = 4;

/// flex on the CPU, or the device `NDHTL_TEST_DEVICE` names (`tch:cpu`, `tch:cuda:0`).
fn device() -> Device {
    ndhtl_agent::device::ComputeDevice::for_tests().autodiff()
}

fn random_tensor<const N: usize>(
    rng: &mut ChaCha8Rng,
    shape: [usize; N],
    low: f32,
    high: f32,
    device: &Device,
) -> Tensor<N> {
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|_| rng.random_range(low..high)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A model whose plastic parameters are large enough that every path matters.
fn model(fanout: bool, seed: u64, device: &Device) -> CifarAlexNet {
    let mut model = CifarAlexNet::new(C, seed, device);
    let mut plastic = PlasticParams::new(C, 0.3, fanout, seed, device);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    plastic.alpha = Param::from_tensor(random_tensor(&mut rng, [D, C], -1.0, 1.0, device));
    plastic.modulator.weight =
        Param::from_tensor(random_tensor(&mut rng, [C, 1], -2.0, 2.0, device));
    model.plastic = Some(plastic);
    model
}

/// The plain element-by-element reference of (P1)–(P7), in f64.
struct Reference {
    w: Vec<f64>,
    b: Vec<f64>,
    a: Vec<f64>,
    u: Vec<f64>,
    c: f64,
    fanout: Option<(Vec<f64>, Vec<f64>)>,
    eta: f64,
}

impl Reference {
    fn of(model: &CifarAlexNet) -> Self {
        let p = model.plastic.as_ref().unwrap();
        Reference {
            w: host(model.classifier.weight.val()),
            b: host(model.classifier.bias.as_ref().unwrap().val()),
            a: host(p.alpha.val()),
            u: host(p.modulator.weight.val()),
            c: host(p.modulator.bias.as_ref().unwrap().val())[0],
            fanout: p
                .fanout
                .as_ref()
                .map(|f| (host(f.weight.val()), host(f.bias.as_ref().unwrap().val()))),
            eta: host(p.eta.val())[0],
        }
    }

    /// Returns (logits B×C, new H, new E); H, E are S×D×C flattened.
    fn step(
        &self,
        x: &[f64],
        batch: usize,
        hebb: &[f64],
        elig: &[f64],
        config: &PlasticConfig,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let slots = hebb.len() / (D * C);
        let slot_of = |b: usize| if slots == 1 { 0 } else { b };
        let at = |s: usize, i: usize, j: usize| s * D * C + i * C + j;
        let mut z = vec![0.0; batch * C];
        for b in 0..batch {
            for j in 0..C {
                let mut sum = self.b[j];
                for i in 0..D {
                    sum += x[b * D + i]
                        * (self.w[i * C + j] + self.a[i * C + j] * hebb[at(slot_of(b), i, j)]);
                }
                z[b * C + j] = sum;
            }
        }
        let mut y = vec![0.0; batch * C];
        for b in 0..batch {
            let row = &z[b * C..(b + 1) * C];
            match config.post {
                PostActivity::Softmax => {
                    let max = row.iter().cloned().fold(f64::MIN, f64::max);
                    let total: f64 = row.iter().map(|v| (v - max).exp()).sum();
                    for j in 0..C {
                        y[b * C + j] = (row[j] - max).exp() / total;
                    }
                }
                PostActivity::Tanh => {
                    for j in 0..C {
                        y[b * C + j] = row[j].tanh();
                    }
                }
            }
        }
        let m: Vec<f64> = (0..batch)
            .map(|b| ((0..C).map(|j| y[b * C + j] * self.u[j]).sum::<f64>() + self.c).tanh())
            .collect();
        let modulation = |value: f64, j: usize| match &self.fanout {
            Some((g, h)) => value * g[j] + h[j],
            None => value,
        };
        let mut new_hebb = hebb.to_vec();
        let mut new_elig = elig.to_vec();
        for s in 0..slots {
            let (m_slot, samples): (f64, Vec<usize>) = if slots == 1 {
                (m.iter().sum::<f64>() / batch as f64, (0..batch).collect())
            } else {
                (m[s], vec![s])
            };
            for i in 0..D {
                for j in 0..C {
                    let q: f64 = samples
                        .iter()
                        .map(|&b| x[b * D + i] * y[b * C + j])
                        .sum::<f64>()
                        / samples.len() as f64;
                    let big_m = modulation(m_slot, j);
                    let k = at(s, i, j);
                    let clip = config.clip as f64;
                    match config.rule {
                        PlasticityRule::Retroactive => {
                            new_hebb[k] = (hebb[k] + big_m * elig[k]).clamp(-clip, clip);
                            new_elig[k] = (1.0 - self.eta) * elig[k] + self.eta * q;
                        }
                        PlasticityRule::Simple => {
                            new_hebb[k] = (hebb[k] + big_m * q).clamp(-clip, clip);
                        }
                    }
                }
            }
        }
        (z, new_hebb, new_elig)
    }
}

fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance * (1.0 + e.abs()),
            "{what}[{index}]: {a} vs {e}"
        );
    }
}

fn check_against_loop(config: PlasticConfig, batch: usize) {
    let device = device();
    let model = model(config.fanout, 11, &device);
    let reference = Reference::of(&model);
    let slots = if config.trace == TraceMode::PerSample {
        batch
    } else {
        1
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut state = HebbianState {
        hebb: random_tensor(&mut rng, [slots, D, C], -0.2, 0.2, &device),
        elig: random_tensor(&mut rng, [slots, D, C], 0.0, 0.6, &device),
    };
    let mut clipped = 0;
    for step in 0..3 {
        let x = random_tensor(&mut rng, [batch, D], 0.0, 1.0, &device);
        let hebb_before = host(state.hebb.clone());
        let elig_before = host(state.elig.clone());
        let (z, hebb, elig) =
            reference.step(&host(x.clone()), batch, &hebb_before, &elig_before, &config);
        let output = model.plastic_step(x, state, &config);
        assert_close(
            &host(output.logits.clone()),
            &z,
            1e-4,
            &format!("logits step {step}"),
        );
        let got_hebb = host(output.state.hebb.clone());
        assert_close(&got_hebb, &hebb, 1e-4, &format!("H step {step}"));
        assert_close(
            &host(output.state.elig.clone()),
            &elig,
            1e-4,
            &format!("E step {step}"),
        );
        clipped += got_hebb
            .iter()
            .filter(|v| (v.abs() - config.clip as f64).abs() < 1e-7)
            .count();
        state = output.state;
    }
    assert!(
        clipped > 0,
        "the clip must be active in this test ({config:?})"
    );
}

#[test]
fn plastic_step_matches_the_loop_reference_in_every_mode() {
    for rule in [PlasticityRule::Retroactive, PlasticityRule::Simple] {
        for fanout in [false, true] {
            for trace in [TraceMode::Shared, TraceMode::PerSample] {
                for post in [PostActivity::Softmax, PostActivity::Tanh] {
                    let config = PlasticConfig {
                        rule,
                        fanout,
                        post,
                        trace,
                        clip: 0.25,
                    };
                    check_against_loop(config, 3);
                }
            }
        }
    }
}

#[test]
fn shared_mode_at_batch_three_is_the_batch_mean_rule() {
    // (P4)–(P5): one step at B = 3 equals the update with mean m and mean outer product,
    // which is what the reference computes; check it directly against averaging three
    // single-sample products.
    let device = device();
    let config = PlasticConfig {
        clip: 10.0,
        ..PlasticConfig::default()
    };
    let model = model(false, 3, &device);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x = random_tensor(&mut rng, [3, D], 0.0, 1.0, &device);
    let zero = HebbianState::zeros(1, C, &device);
    let batch_step = model.plastic_step(x.clone(), zero.clone(), &config);
    let eta = host(model.plastic.as_ref().unwrap().eta.val())[0];
    let mut mean_q = vec![0.0; D * C];
    for b in 0..3 {
        let single = model.plastic_step(x.clone().slice([b..b + 1, 0..D]), zero.clone(), &config);
        // With E(0) = 0: E(1) = η Q, so Q = E(1) / η.
        for (acc, e) in mean_q.iter_mut().zip(host(single.state.elig)) {
            *acc += e / eta / 3.0;
        }
    }
    let batch_q: Vec<f64> = host(batch_step.state.elig)
        .iter()
        .map(|e| e / eta)
        .collect();
    assert_close(&batch_q, &mean_q, 1e-4, "batch-mean Hebbian product");
}

#[test]
fn per_sample_mode_equals_independent_single_sample_streams() {
    let device = device();
    for fanout in [false, true] {
        let per_sample = PlasticConfig {
            trace: TraceMode::PerSample,
            clip: 0.3,
            fanout,
            ..PlasticConfig::default()
        };
        let shared = PlasticConfig {
            trace: TraceMode::Shared,
            ..per_sample
        };
        let model = model(fanout, 21, &device);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let inputs: Vec<Tensor<2>> = (0..4)
            .map(|_| random_tensor(&mut rng, [3, D], 0.0, 1.0, &device))
            .collect();
        let mut batched = HebbianState::zeros(3, C, &device);
        let mut streams: Vec<HebbianState> =
            (0..3).map(|_| HebbianState::zeros(1, C, &device)).collect();
        for x in &inputs {
            let out = model.plastic_step(x.clone(), batched, &per_sample);
            let logits = host(out.logits);
            batched = out.state;
            for (b, stream) in streams.iter_mut().enumerate() {
                let single =
                    model.plastic_step(x.clone().slice([b..b + 1, 0..D]), stream.clone(), &shared);
                assert_close(
                    &host(single.logits),
                    &logits[b * C..(b + 1) * C],
                    1e-5,
                    "logits",
                );
                *stream = single.state;
            }
        }
        for (b, stream) in streams.iter().enumerate() {
            let slot = host(batched.hebb.clone().slice([b..b + 1, 0..D, 0..C]));
            assert_close(&slot, &host(stream.hebb.clone()), 1e-5, "H per slot");
        }
        // Evaluation uses the mean over slots.
        let mean: Vec<f64> = (0..D * C)
            .map(|k| streams.iter().map(|s| host(s.hebb.clone())[k]).sum::<f64>() / 3.0)
            .collect();
        assert_close(&host(batched.eval_hebb()), &mean, 1e-5, "H_eval");
    }
}

#[test]
fn hebb_first_moves_at_step_two_and_reaches_logits_at_step_three() {
    let device = device();
    let config = PlasticConfig::default();
    let model = model(false, 8, &device);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut state = HebbianState::zeros(1, C, &device);
    let mut hebb_abs = Vec::new();
    let mut logits = Vec::new();
    for _ in 0..3 {
        let x = random_tensor(&mut rng, [1, D], 0.0, 1.0, &device);
        let plain = host(model.linear_logits(x.clone()));
        let out = model.plastic_step(x, state, &config);
        let delta: f64 = host(out.logits.clone())
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .sum();
        logits.push(delta);
        state = out.state;
        hebb_abs.push(
            host(state.hebb.clone())
                .iter()
                .map(|v| v.abs())
                .sum::<f64>(),
        );
    }
    assert_eq!(hebb_abs[0], 0.0, "H(1) = 0");
    assert!(hebb_abs[1] > 0.0, "H(2) ≠ 0");
    assert_eq!(logits[0] + logits[1], 0.0, "steps 1, 2 see H = 0");
    assert!(logits[2] > 0.0, "step 3 sees H(3)");
}

/// A warmed-up, detached state (so H and E are non-zero at the window start).
fn warm_state(
    model: &CifarAlexNet,
    config: &PlasticConfig,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> HebbianState {
    let mut state = HebbianState::zeros(1, C, device);
    for _ in 0..4 {
        let x = random_tensor(rng, [1, D], 0.0, 1.0, device);
        state = model.plastic_step(x, state, config).state.detach();
    }
    state
}

/// Summed CE over a window of `inputs` starting from `state`.
fn window_loss(
    model: &CifarAlexNet,
    state: HebbianState,
    inputs: &[(Tensor<2>, Tensor<1, Int>)],
    config: &PlasticConfig,
) -> Tensor<1> {
    let mut state = state;
    let mut total: Option<Tensor<1>> = None;
    for (x, y) in inputs {
        let out = model.plastic_step(x.clone(), state, config);
        state = out.state;
        let loss = cross_entropy(out.logits, y.clone());
        total = Some(match total {
            Some(t) => t + loss,
            None => loss,
        });
    }
    total.unwrap()
}

fn window_inputs(
    rng: &mut ChaCha8Rng,
    k: usize,
    device: &Device,
) -> Vec<(Tensor<2>, Tensor<1, Int>)> {
    (0..k)
        .map(|_| {
            let x = random_tensor(rng, [1, D], 0.0, 1.0, device);
            let y = Tensor::from_data(
                TensorData::new(vec![rng.random_range(0..C as i64)], [1]),
                device,
            );
            (x, y)
        })
        .collect()
}

fn gradient_norm<const N: usize>(grads: &GradientsParams, param: &Param<Tensor<N>>) -> f64 {
    grads
        .get::<N>(param.id)
        .map(|g| host(g.abs().sum())[0])
        .unwrap_or(0.0)
}

#[test]
fn gradient_reachability_by_window_length() {
    let device = device();
    let config = PlasticConfig {
        clip: 10.0,
        ..PlasticConfig::default()
    };
    for k in 1..=3 {
        let model = model(false, 31, &device);
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        let state = warm_state(&model, &config, &mut rng, &device);
        let inputs = window_inputs(&mut rng, k, &device);
        let loss = window_loss(&model, state, &inputs, &config);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let plastic = model.plastic.as_ref().unwrap();
        let alpha = gradient_norm(&grads, &plastic.alpha);
        let modulator = gradient_norm(&grads, &plastic.modulator.weight)
            + gradient_norm(&grads, plastic.modulator.bias.as_ref().unwrap());
        let eta = gradient_norm(&grads, &plastic.eta);
        let weight = gradient_norm(&grads, &model.classifier.weight);
        assert!(alpha > 0.0 && weight > 0.0, "K={k}: α and W always learn");
        match k {
            1 => assert!(
                modulator == 0.0 && eta == 0.0,
                "K=1: modulator {modulator}, η {eta}"
            ),
            2 => assert!(
                modulator > 0.0 && eta == 0.0,
                "K=2: modulator {modulator}, η {eta}"
            ),
            _ => assert!(
                modulator > 0.0 && eta > 0.0,
                "K=3: modulator {modulator}, η {eta}"
            ),
        }
    }
}

/// Replaces entry `index` of a parameter's value.
fn perturbed<const N: usize>(
    param: &Param<Tensor<N>>,
    index: usize,
    delta: f32,
) -> Param<Tensor<N>> {
    let value = param.val();
    let shape: [usize; N] = value.dims();
    let device = value.device();
    let mut data = value.into_data().try_into_vec::<f32>().unwrap();
    data[index] += delta;
    Param::initialized(
        param.id,
        Tensor::from_data(TensorData::new(data, shape), &device),
    )
}

#[test]
fn finite_differences_agree_with_autodiff_through_a_three_step_window() {
    let device = device();
    for fanout in [false, true] {
        let config = PlasticConfig {
            clip: 10.0,
            fanout,
            ..PlasticConfig::default()
        };
        let base = model(fanout, 41, &device);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let state = warm_state(&base, &config, &mut rng, &device);
        let inputs = window_inputs(&mut rng, 3, &device);
        let loss = window_loss(&base, state.clone(), &inputs, &config);
        let grads = GradientsParams::from_grads(loss.backward(), &base);
        let evaluate =
            |model: &CifarAlexNet| host(window_loss(model, state.clone(), &inputs, &config))[0];

        type Edit = fn(&mut CifarAlexNet, f32);
        let cases: Vec<(&str, f64, Edit)> = vec![
            (
                "eta",
                grads
                    .get::<1>(base.plastic.as_ref().unwrap().eta.id)
                    .map(|g| host(g)[0])
                    .unwrap(),
                |m, d| {
                    let p = m.plastic.as_mut().unwrap();
                    p.eta = perturbed(&p.eta, 0, d);
                },
            ),
            (
                "alpha[7,2]",
                host(
                    grads
                        .get::<2>(base.plastic.as_ref().unwrap().alpha.id)
                        .unwrap(),
                )[7 * C + 2],
                |m, d| {
                    let p = m.plastic.as_mut().unwrap();
                    p.alpha = perturbed(&p.alpha, 7 * C + 2, d);
                },
            ),
            (
                "modulator u[1]",
                host(
                    grads
                        .get::<2>(base.plastic.as_ref().unwrap().modulator.weight.id)
                        .unwrap(),
                )[1],
                |m, d| {
                    let p = m.plastic.as_mut().unwrap();
                    p.modulator.weight = perturbed(&p.modulator.weight, 1, d);
                },
            ),
            (
                "modulator c",
                host(
                    grads
                        .get::<1>(
                            base.plastic
                                .as_ref()
                                .unwrap()
                                .modulator
                                .bias
                                .as_ref()
                                .unwrap()
                                .id,
                        )
                        .unwrap(),
                )[0],
                |m, d| {
                    let p = m.plastic.as_mut().unwrap();
                    let bias = p.modulator.bias.take().unwrap();
                    p.modulator.bias = Some(perturbed(&bias, 0, d));
                },
            ),
            (
                "W[3,1]",
                host(grads.get::<2>(base.classifier.weight.id).unwrap())[3 * C + 1],
                |m, d| {
                    m.classifier.weight = perturbed(&m.classifier.weight, 3 * C + 1, d);
                },
            ),
        ];
        for (name, analytic, edit) in cases {
            let h = 1e-2f32;
            let mut plus = base.clone();
            edit(&mut plus, h);
            let mut minus = base.clone();
            edit(&mut minus, -h);
            let numeric = (evaluate(&plus) - evaluate(&minus)) / (2.0 * h as f64);
            let scale = analytic.abs().max(numeric.abs()).max(1e-3);
            assert!(
                (analytic - numeric).abs() / scale < 3e-2,
                "fanout={fanout} {name}: autodiff {analytic:.6} vs finite difference {numeric:.6}"
            );
            assert!(
                analytic.abs() > 1e-5,
                "{name}: gradient should not vanish in this setup"
            );
        }
    }
}
