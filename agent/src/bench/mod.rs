//! Throughput measurements behind `ndhtl bench`: the same workloads as `bench/pytorch_reference.py`.
//!
//! - `train_b128`: one STL SGD step on a batch of 128 (source-training regime);
//! - `train_b1_stl`: one STL step at batch 1 (the paper's fine-tuning regime);
//! - `train_b1_stl_unfused_sgd`: the same with Burn's tensor-op SGD instead of the fused one
//!   (`train::optimizer`): what fusing the update saves, in the same run;
//! - `train_b128_burn_conv_grads`, `train_b1_stl_burn_conv_grads`: those steps with Burn's
//!   convolution and its gradient formulas on every backend instead of the default choice
//!   (`model::conv`: on the CPU, flex and libtorch, ndhtl's batched host convolution; on a GPU
//!   libtorch's forward and ATen's backward);
//! - `train_b128_aten_conv`, `train_b1_stl_aten_conv`, `train_b1_ndhtl_k10_aten_conv`,
//!   `infer_b1000_aten_conv` (libtorch on the CPU only): those workloads with libtorch's own
//!   convolution, ATen's forward and backward (oneDNN), instead of the host convolution;
//! - `train_b1_stl_pageable_uploads` (CUDA devices only): that step with burn-tch's synchronous
//!   copies from pageable memory instead of pinned, asynchronous ones (`upload`);
//! - `train_b1_ndhtl_k10`: NDHTL at batch 1, a plastic step every image, a backward every 10;
//! - `train_b1_stl_burn_softmax`, `train_b1_ndhtl_k10_burn_softmax`: those steps with Burn's
//!   composite softmax and log-softmax instead of the fused ones (`model::softmax`);
//! - `loop_b1_stl`, `loop_b1_ndhtl_k10`: the real fine-tuning loop (pipeline, accumulators,
//!   windows) at batch 1; against the bare steps this is ndhtl's own per-step overhead;
//! - `softmax_head_b1`, `softmax_head_b1_burn`: a batch-1 NDHTL step's softmax work alone
//!   (P2's softmax and the loss's log-softmax of 1×10 logits, forward and backward), fused and
//!   Burn's composite: the per-step overhead the fused one cuts;
//! - `infer_b1000`: inference on a batch of 1000; `infer_b1000_burn_conv` with Burn's
//!   convolution (on libtorch, ATen's forward as `infer_b1000_aten_conv`);
//! - `pipeline`: the input pipeline alone (augment + normalise), to show it never limits training.
//!
//! Each is warmed up, then timed `repeats` times; the median is reported in images per second.

use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::TaskImages;
use crate::data::cifar_format::IMAGE_BYTES;
use crate::data::pipeline::{Augmentation, EpochPlan, Normalization, assemble_batch};
use crate::device::{BackendKind, ComputeDevice};
use crate::model::conv::ConvolutionGradients;
use crate::model::loss::cross_entropy;
use crate::model::softmax::SoftmaxKernels;
use crate::model::{CifarAlexNet, HebbianState, PlasticConfig, PlasticParams};
use crate::train::lifetime::{images_tensor, labels_tensor};
use crate::train::optimizer::{SgdKernel, build_optimizer, build_optimizer_with, step_and_apply};
use crate::upload::{HostUploads, float_to_device};

mod op_census;

/// One measured workload.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub workload: &'static str,
    pub images_per_second: f64,
    /// Median seconds per step (per batch).
    pub seconds_per_step: f64,
}

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchPlan {
    pub repeats: usize,
    pub scale: f64,
}

impl BenchPlan {
    pub const STANDARD: BenchPlan = BenchPlan {
        repeats: 5,
        scale: 1.0,
    };
    pub const QUICK: BenchPlan = BenchPlan {
        repeats: 3,
        scale: 0.25,
    };

    fn steps(&self, base: usize) -> usize {
        ((base as f64 * self.scale).round() as usize).max(1)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn random_batch(rng: &mut ChaCha8Rng, batch: usize) -> (Vec<f32>, Vec<i64>) {
    let pixels = (0..batch * IMAGE_BYTES)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let labels = (0..batch).map(|_| rng.random_range(0..10)).collect();
    (pixels, labels)
}

/// Times `run(steps)` after a warm-up; returns the median seconds per step.
fn time_steps(plan: &BenchPlan, warmup: usize, steps: usize, run: impl FnMut(usize)) -> f64 {
    time_runs(plan, warmup, steps, steps, run)
}

/// [`time_steps`], where the op census divides each timed `run(steps)` by `census_steps`
/// instead: the backward windows of a whole lifetime, so that the real loop's calls per window
/// compare with the bare step's.
fn time_runs(
    plan: &BenchPlan,
    warmup: usize,
    steps: usize,
    census_steps: usize,
    mut run: impl FnMut(usize),
) -> f64 {
    run(warmup);
    let samples = (0..plan.repeats)
        .map(|_| {
            op_census::begin();
            let start = Instant::now();
            run(steps);
            let seconds = start.elapsed().as_secs_f64();
            op_census::end(census_steps);
            seconds / steps as f64
        })
        .collect();
    median(samples)
}

/// Blocks until the device has run every step queued so far: the last step's update of the
/// classifier is the last work queued, and reading it back waits for it.
fn wait_for_queued_work(model: &CifarAlexNet) {
    let _ = model.classifier.weight.val().into_data();
}

fn measurement(workload: &'static str, batch: usize, seconds_per_step: f64) -> Measurement {
    Measurement {
        workload,
        images_per_second: batch as f64 / seconds_per_step,
        seconds_per_step,
    }
}

/// STL training steps at `batch`, with the SGD update `kernel`.
fn bench_stl_train(
    device: &ComputeDevice,
    plan: &BenchPlan,
    batch: usize,
    base_steps: usize,
    kernel: SgdKernel,
) -> f64 {
    let training = device.autodiff();
    let model = CifarAlexNet::new(10, 0, &training);
    let mut optimizer = build_optimizer_with(&model, 0.9, 5e-4, kernel);
    let mut slot = Some(model);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (pixels, labels) = random_batch(&mut rng, batch);
    time_steps(
        plan,
        plan.steps(base_steps / 4).max(2),
        plan.steps(base_steps),
        |steps| {
            for _ in 0..steps {
                let model = slot.take().expect("model");
                let images = images_tensor(pixels.clone(), batch, &training);
                let targets = labels_tensor(labels.clone(), &training);
                let loss = cross_entropy(model.forward_linear(images), targets);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                slot = Some(step_and_apply(&mut optimizer, 1e-4, model, grads));
            }
            wait_for_queued_work(slot.as_ref().expect("model"));
        },
    )
}

/// The softmax work of one batch-1 NDHTL step on its own: the post-synaptic softmax (P2) and
/// the cross-entropy's log-softmax of 1×10 logits, forward and backward; seconds per step.
/// Against `softmax_head_b1_burn` this is what the fused softmax saves per step.
fn bench_softmax_head(device: &ComputeDevice, plan: &BenchPlan, base_steps: usize) -> f64 {
    let training = device.autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let logits: Vec<f32> = (0..10).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let probe: Vec<f32> = (0..10).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let probe = float_to_device(probe, [1, 10], &training);
    time_steps(
        plan,
        plan.steps(base_steps / 4).max(2),
        plan.steps(base_steps),
        |steps| {
            let mut last = None;
            for _ in 0..steps {
                let z = float_to_device(logits.as_slice(), [1, 10], &training).require_grad();
                let targets = labels_tensor(vec![3], &training);
                let post = crate::model::softmax::softmax(z.clone(), 1);
                let loss = cross_entropy(z.clone(), targets) + (post * probe.clone()).sum();
                let grads = loss.backward();
                last = z.grad(&grads);
            }
            let _ = last.map(|grad| grad.into_data()); // wait for queued work
        },
    )
}

/// NDHTL at batch 1 with a backward pass every `k` steps; seconds per image.
fn bench_ndhtl_train(
    device: &ComputeDevice,
    plan: &BenchPlan,
    k: usize,
    base_windows: usize,
) -> f64 {
    let training = device.autodiff();
    let mut model = CifarAlexNet::new(10, 0, &training);
    model.plastic = Some(PlasticParams::new(10, 0.1, false, 0, &training));
    let mut optimizer = build_optimizer(&model, 0.9, 5e-4);
    let mut slot = Some(model);
    let config = PlasticConfig::default();
    let mut state = Some(HebbianState::zeros(1, 10, &training));
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let batches: Vec<(Vec<f32>, Vec<i64>)> = (0..k).map(|_| random_batch(&mut rng, 1)).collect();
    let per_window = time_steps(plan, 2, plan.steps(base_windows), |windows| {
        for _ in 0..windows {
            let model = slot.take().expect("model");
            let mut total: Option<Tensor<1>> = None;
            for (pixels, labels) in &batches {
                let images = images_tensor(pixels.clone(), 1, &training);
                let targets = labels_tensor(labels.clone(), &training);
                let features = model.features.forward(images);
                let step = model.plastic_step(features, state.take().expect("state"), &config);
                state = Some(step.state);
                let loss = cross_entropy(step.logits, targets);
                total = Some(total.map_or(loss.clone(), |t| t + loss));
            }
            let grads = GradientsParams::from_grads(total.expect("k ≥ 1").backward(), &model);
            slot = Some(step_and_apply(&mut optimizer, 1e-4, model, grads));
            state = state.take().map(HebbianState::detach);
        }
        wait_for_queued_work(slot.as_ref().expect("model"));
    });
    per_window / k as f64
}

fn bench_inference(device: &ComputeDevice, plan: &BenchPlan, batch: usize) -> f64 {
    let model = CifarAlexNet::new(10, 0, &device.device).valid();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (pixels, _) = random_batch(&mut rng, batch);
    let inference_device: &Device = &device.device;
    time_steps(plan, 1, plan.steps(4), |steps| {
        for _ in 0..steps {
            // Borrowed: uploaded from the same host buffer every time, as PyTorch's side does.
            let images = float_to_device(&pixels[..], [batch, 3, 32, 32], inference_device);
            let logits = model.forward_linear(images);
            let _ = logits.argmax(1).into_data();
        }
    })
}

/// The input pipeline alone, single-threaded: images per second it can supply.
pub fn bench_pipeline(plan: &BenchPlan) -> Measurement {
    op_census::set_workload("pipeline_b1");
    let count = 5000;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let images = Arc::new(TaskImages {
        pixels: (0..count * IMAGE_BYTES).map(|_| rng.random()).collect(),
        labels: (0..count).map(|i| (i % 10) as u8).collect(),
        num_classes: 10,
    });
    let lut = Normalization::CIFAR10.lookup_table();
    let epoch = EpochPlan::new(count, 0, 0, Augmentation::STANDARD, true);
    let per_image = time_steps(plan, 1, 1, |_| {
        for index in 0..count {
            let batch = assemble_batch(&images, &epoch, &lut, 1, index, count);
            std::hint::black_box(batch);
        }
    }) / count as f64;
    measurement("pipeline_b1", 1, per_image)
}

/// The real fine-tuning loop (`train_lifetime`: prefetching pipeline, per-step accumulators,
/// K-step windows) at batch 1 over `images` generated images; seconds per image. Compared with
/// the bare steps above, this is ndhtl's own per-step overhead; the op census counts it per
/// backward window, as it counts the bare steps.
fn bench_training_loop(
    device: &ComputeDevice,
    plan: &BenchPlan,
    method: crate::train::Method,
    images: usize,
) -> f64 {
    use crate::train::config::FinetuneConfig;
    use crate::train::finetune::assemble_finetune_model;
    use crate::train::lifetime::{CancelToken, NoObserver, TrainingState, train_lifetime};
    let training = device.autodiff();
    let images = plan.steps(images).max(20);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let data = Arc::new(TaskImages {
        pixels: (0..images * IMAGE_BYTES).map(|_| rng.random()).collect(),
        labels: (0..images).map(|i| (i % 10) as u8).collect(),
        num_classes: 10,
    });
    let config = FinetuneConfig {
        method,
        ..FinetuneConfig::default()
    };
    let settings = crate::train::finetune::finetune_loop_settings(&config);
    let model = assemble_finetune_model(
        crate::model::AlexNetFeatures::new(0, &training),
        &config,
        10,
        &training,
    );
    let optimizer = build_optimizer(&model, config.momentum, config.weight_decay);
    let hebbian = model
        .plastic
        .as_ref()
        .map(|_| HebbianState::zeros(1, 10, &training));
    let mut slot = Some(TrainingState {
        model,
        optimizer,
        hebbian,
    });
    let mut lifetime = 0;
    let windows = settings
        .steps_per_lifetime(images)
        .div_ceil(settings.window);
    time_runs(plan, 1, 1, windows, |_| {
        let state = slot.take().expect("state");
        let (next, _) = train_lifetime(
            state,
            &settings,
            lifetime,
            config.lr,
            &data,
            &training,
            &mut NoObserver,
            &CancelToken::new(),
        )
        .expect("not cancelled");
        slot = Some(next);
        lifetime += 1;
    }) / images as f64
}

/// `measure` with Burn's convolution and its gradient formulas on every backend.
fn with_burn_conv_gradients(measure: impl FnOnce() -> f64) -> f64 {
    with_convolution(ConvolutionGradients::Burn, measure)
}

/// `measure` with the convolutions as `setting` asks.
fn with_convolution(setting: ConvolutionGradients, measure: impl FnOnce() -> f64) -> f64 {
    let previous = setting.apply();
    let seconds_per_step = measure();
    previous.apply();
    seconds_per_step
}

/// `measure` with Burn's composite softmax and log-softmax.
fn with_burn_softmax(measure: impl FnOnce() -> f64) -> f64 {
    let previous = SoftmaxKernels::Burn.apply();
    let seconds_per_step = measure();
    previous.apply();
    seconds_per_step
}

/// `measure` with burn-tch's pageable, synchronous uploads instead of pinned ones.
fn with_pageable_uploads(measure: impl FnOnce() -> f64) -> f64 {
    let previous = HostUploads::Pageable.apply();
    let seconds_per_step = measure();
    previous.apply();
    seconds_per_step
}

/// The model workloads on `device`; `only` keeps the named ones (all when empty).
pub fn bench_device(device: &ComputeDevice, plan: &BenchPlan, only: &[String]) -> Vec<Measurement> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut results = Vec::new();
    let mut run = |name: &'static str, batch: usize, measure: &dyn Fn() -> f64| {
        if wanted(name) {
            tracing::info!(device = %device.label(), workload = name, "bench");
            op_census::set_workload(name);
            results.push(measurement(name, batch, measure()));
        }
    };
    run("train_b128", 128, &|| {
        bench_stl_train(device, plan, 128, 8, SgdKernel::current())
    });
    run("train_b128_burn_conv_grads", 128, &|| {
        with_burn_conv_gradients(|| bench_stl_train(device, plan, 128, 8, SgdKernel::current()))
    });
    let on_libtorch_cpu = device.backend == BackendKind::Tch && !device.is_gpu();
    if on_libtorch_cpu {
        // libtorch's own convolution (ATen's forward and backward, oneDNN) against the host
        // convolution the CPU takes by default (`model::conv`).
        run("train_b128_aten_conv", 128, &|| {
            with_convolution(ConvolutionGradients::Backend, || {
                bench_stl_train(device, plan, 128, 8, SgdKernel::current())
            })
        });
    }
    run("train_b1_stl", 1, &|| {
        bench_stl_train(device, plan, 1, 200, SgdKernel::current())
    });
    if on_libtorch_cpu {
        run("train_b1_stl_aten_conv", 1, &|| {
            with_convolution(ConvolutionGradients::Backend, || {
                bench_stl_train(device, plan, 1, 200, SgdKernel::current())
            })
        });
    }
    run("train_b1_stl_unfused_sgd", 1, &|| {
        bench_stl_train(device, plan, 1, 200, SgdKernel::TensorOps)
    });
    run("train_b1_stl_burn_conv_grads", 1, &|| {
        with_burn_conv_gradients(|| bench_stl_train(device, plan, 1, 200, SgdKernel::current()))
    });
    if device.is_gpu() {
        // Pinned uploads differ from pageable ones on CUDA devices only.
        run("train_b1_stl_pageable_uploads", 1, &|| {
            with_pageable_uploads(|| bench_stl_train(device, plan, 1, 200, SgdKernel::current()))
        });
    }
    run("train_b1_stl_burn_softmax", 1, &|| {
        with_burn_softmax(|| bench_stl_train(device, plan, 1, 200, SgdKernel::current()))
    });
    run("train_b1_ndhtl_k10", 1, &|| {
        bench_ndhtl_train(device, plan, 10, 20)
    });
    if on_libtorch_cpu {
        run("train_b1_ndhtl_k10_aten_conv", 1, &|| {
            with_convolution(ConvolutionGradients::Backend, || {
                bench_ndhtl_train(device, plan, 10, 20)
            })
        });
    }
    run("train_b1_ndhtl_k10_burn_softmax", 1, &|| {
        with_burn_softmax(|| bench_ndhtl_train(device, plan, 10, 20))
    });
    run("loop_b1_stl", 1, &|| {
        bench_training_loop(device, plan, crate::train::Method::Stl, 200)
    });
    run("loop_b1_ndhtl_k10", 1, &|| {
        bench_training_loop(device, plan, crate::train::Method::Ndhtl, 200)
    });
    run("softmax_head_b1", 1, &|| {
        bench_softmax_head(device, plan, 2000)
    });
    run("softmax_head_b1_burn", 1, &|| {
        with_burn_softmax(|| bench_softmax_head(device, plan, 2000))
    });
    run("infer_b1000", 1000, &|| bench_inference(device, plan, 1000));
    run("infer_b1000_burn_conv", 1000, &|| {
        with_burn_conv_gradients(|| bench_inference(device, plan, 1000))
    });
    if on_libtorch_cpu {
        run("infer_b1000_aten_conv", 1000, &|| {
            with_convolution(ConvolutionGradients::Backend, || {
                bench_inference(device, plan, 1000)
            })
        });
    }
    results
}
