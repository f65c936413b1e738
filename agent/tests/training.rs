//! Spec §9, properties 5–6, and the run-level guarantees: NDHTL with clip 0 and K = 1 equals
//! STL; source training and both fine-tunings learn far above chance on generated data;
//! a checkpointed, interrupted and resumed run equals an uninterrupted one; same seed, same
//! numbers; PyTorch-named weights round-trip through safetensors.

use std::path::Path;

use ndhtl_agent::data::TaskSpec;
use ndhtl_agent::data::synth::{SynthOptions, write_synthetic};
use ndhtl_agent::device::ComputeDevice;
use ndhtl_agent::model::io::{export_safetensors, load_source_features};
use ndhtl_agent::model::{AlexNetFeatures, CifarAlexNet};
use ndhtl_agent::train::{
    CancelToken, FinetuneConfig, LifetimeMetrics, Method, NoObserver, SourceConfig, TaskData,
    TrainError, TrainingObserver, run_finetune, run_source,
};

/// flex on the CPU, or the device `NDHTL_TEST_DEVICE` names (`tch:cpu`, `tch:cuda:0`).
fn test_device() -> ComputeDevice {
    ComputeDevice::for_tests()
}

fn synth_data(dir: &Path, per_class_c10: usize, per_class_c100: usize) {
    write_synthetic(
        dir,
        &SynthOptions {
            seed: 1,
            cifar10_train_per_class: per_class_c10,
            cifar10_test_per_class: 20,
            cifar100_train_per_class: per_class_c100,
            cifar100_test_per_class: 10,
        },
    )
    .unwrap();
}

/// Drops the wall-clock fields, which legitimately differ between runs.
fn comparable(history: &[LifetimeMetrics]) -> Vec<LifetimeMetrics> {
    history
        .iter()
        .map(|m| LifetimeMetrics {
            train_seconds: 0.0,
            train_images_per_second: 0.0,
            ..m.clone()
        })
        .collect()
}

/// A target task's data, loaded from CIFAR files generated in a temporary folder with
/// `per_class_c100` training images per CIFAR-100 class (2 per CIFAR-10 class).
fn generated_task_data(task: &str, per_class_c100: usize) -> TaskData {
    let dir = tempfile::tempdir().unwrap();
    synth_data(dir.path(), 2, per_class_c100);
    TaskData::load(dir.path(), &task.parse().unwrap(), None).unwrap()
}

fn random_features(seed: u64) -> AlexNetFeatures {
    AlexNetFeatures::new(seed, &test_device().device)
}

#[test]
fn ndhtl_with_clip_zero_and_k_one_equals_stl() {
    let data = generated_task_data("T1", 6);
    let stl = FinetuneConfig {
        method: Method::Stl,
        lifetimes: 2,
        lr: 1e-3,
        seed: 5,
        ..FinetuneConfig::default()
    };
    let mut ndhtl = FinetuneConfig {
        method: Method::Ndhtl,
        k: 1,
        ..stl.clone()
    };
    ndhtl.plastic.clip = 0.0;
    let run = |config: &FinetuneConfig| {
        run_finetune(
            config,
            random_features(3),
            "src",
            &data,
            &test_device(),
            None,
            &mut NoObserver,
            &CancelToken::new(),
        )
        .unwrap()
        .history
    };
    let stl_history = comparable(&run(&stl));
    let ndhtl_history: Vec<LifetimeMetrics> = comparable(&run(&ndhtl))
        .into_iter()
        .map(|m| LifetimeMetrics {
            eta: None,
            alpha_abs_mean: None,
            hebb_abs_mean: None,
            modulator_mean: None,
            ..m
        })
        .collect();
    assert_eq!(stl_history[0].steps, 60);
    assert_eq!(
        stl_history, ndhtl_history,
        "bit-for-bit equal per-lifetime metrics"
    );

    // And the reduction is not vacuous: with the default clip the runs differ.
    let default_ndhtl = FinetuneConfig {
        method: Method::Ndhtl,
        k: 1,
        ..stl.clone()
    };
    let plastic_history = comparable(&run(&default_ndhtl));
    assert_ne!(plastic_history[1].val_loss, stl_history[1].val_loss);
}

struct CancelAfter {
    lifetimes: usize,
    token: CancelToken,
}

impl TrainingObserver for CancelAfter {
    fn on_lifetime(&mut self, metrics: &LifetimeMetrics) {
        if metrics.lifetime == self.lifetimes {
            self.token.cancel();
        }
    }
}

#[test]
fn an_interrupted_and_resumed_run_equals_an_uninterrupted_one() {
    let data = generated_task_data("T3", 5);
    for (method, batch_size, trace_per_sample) in [
        (Method::Ndhtl, 2, false),
        (Method::Ndhtl, 3, true),
        (Method::Stl, 1, false),
    ] {
        let mut config = FinetuneConfig {
            method,
            lifetimes: 3,
            k: 3,
            batch_size,
            lr: 2e-3,
            seed: 9,
            ..FinetuneConfig::default()
        };
        if trace_per_sample {
            config.plastic.trace = ndhtl_agent::model::TraceMode::PerSample;
        }
        let whole = run_finetune(
            &config,
            random_features(4),
            "src",
            &data,
            &test_device(),
            None,
            &mut NoObserver,
            &CancelToken::new(),
        )
        .unwrap();

        let run_dir = tempfile::tempdir().unwrap();
        let token = CancelToken::new();
        let mut observer = CancelAfter {
            lifetimes: 2,
            token: token.clone(),
        };
        let first = run_finetune(
            &config,
            random_features(4),
            "src",
            &data,
            &test_device(),
            Some(run_dir.path()),
            &mut observer,
            &token,
        );
        assert!(
            matches!(first, Err(TrainError::Cancelled(_))),
            "stopped during lifetime 3"
        );
        assert!(run_dir.path().join("checkpoint/model.bpk").exists());
        assert!(run_dir.path().join("checkpoint/optimizer.bpk").exists());
        assert_eq!(
            run_dir.path().join("checkpoint/hebbian.bpk").exists(),
            method == Method::Ndhtl
        );

        let resumed = run_finetune(
            &config,
            random_features(4),
            "src",
            &data,
            &test_device(),
            Some(run_dir.path()),
            &mut NoObserver,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(resumed.resumed_lifetimes, 2);
        assert_eq!(
            comparable(&resumed.history),
            comparable(&whole.history),
            "{method:?} b={batch_size}"
        );
        let lines = std::fs::read_to_string(run_dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 3);

        // A different configuration refuses to resume from this checkpoint.
        let other = FinetuneConfig {
            lr: 1e-3,
            ..config.clone()
        };
        let refused = run_finetune(
            &other,
            random_features(4),
            "src",
            &data,
            &test_device(),
            Some(run_dir.path()),
            &mut NoObserver,
            &CancelToken::new(),
        );
        assert!(
            matches!(refused, Err(TrainError::Checkpoint(_))),
            "config mismatch must be refused"
        );
    }
}

#[test]
fn same_seed_same_numbers_different_seed_different_numbers() {
    let data = generated_task_data("T2", 4);
    let run = |seed| {
        let config = FinetuneConfig {
            lifetimes: 1,
            k: 4,
            seed,
            lr: 1e-3,
            ..FinetuneConfig::default()
        };
        comparable(
            &run_finetune(
                &config,
                random_features(1),
                "s",
                &data,
                &test_device(),
                None,
                &mut NoObserver,
                &CancelToken::new(),
            )
            .unwrap()
            .history,
        )
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn source_training_and_both_fine_tunings_learn_far_above_chance() {
    let dir = tempfile::tempdir().unwrap();
    synth_data(dir.path(), 60, 30);
    let source_task: TaskSpec = "cifar10".parse().unwrap();
    let source_data = TaskData::load(dir.path(), &source_task, None).unwrap();
    let source_config = SourceConfig {
        epochs: 6,
        batch_size: 32,
        lr: 0.02,
        seed: 2,
        ..SourceConfig::default()
    };
    let source = run_source(
        &source_config,
        &source_data,
        &test_device(),
        None,
        &mut NoObserver,
        &CancelToken::new(),
    )
    .unwrap();
    let source_top1 = source.run.summary.final_top1;
    assert!(
        source_top1 > 50.0,
        "source top-1 {source_top1:.1}% (chance 10%)"
    );

    // Round-trip the source through PyTorch naming, as a user bringing their own weights would.
    let exported = dir.path().join("source.safetensors");
    export_safetensors(&source.model, &exported).unwrap();
    let features = load_source_features(&exported, 0, &test_device().device).unwrap();

    let target: TaskSpec = "T1".parse().unwrap();
    let target_data = TaskData::load(dir.path(), &target, None).unwrap();
    for method in [Method::Stl, Method::Ndhtl] {
        let config = FinetuneConfig {
            method,
            lifetimes: 2,
            lr: 1e-3,
            seed: 3,
            ..FinetuneConfig::default()
        };
        let outcome = run_finetune(
            &config,
            features.clone(),
            "src",
            &target_data,
            &test_device(),
            None,
            &mut NoObserver,
            &CancelToken::new(),
        )
        .unwrap();
        // T1 has 10 classes and 100 test images here: a guessing model scores 10 % top-1 and
        // 50 % top-5, with standard deviations of 3 % and 5 %. Learning means five of them
        // above chance. (A fixed 40 % top-1 failed for NDHTL at 30.0 % on a second 2-core VM
        // type, before and after 2026-12-02's changes alike: flex's rounding differs between
        // CPUs, and two lifetimes on 100 test images are a noisy measure.)
        let test_images = 100.0;
        let above_chance =
            |chance: f64| 100.0 * (chance + 5.0 * (chance * (1.0 - chance) / test_images).sqrt());
        let top1 = outcome.summary.final_top1;
        assert!(
            top1 > above_chance(0.1),
            "{method:?} fine-tune top-1 {top1:.1}% (chance 10%, needs > {:.0}%)",
            above_chance(0.1)
        );
        let last = outcome.history.last().unwrap();
        assert!(
            last.val_top5 > above_chance(0.5),
            "{method:?} top-5 {:.1}% (chance 50%, needs > {:.0}%)",
            last.val_top5,
            above_chance(0.5)
        );
        if method == Method::Ndhtl {
            assert_eq!(
                last.backward_passes,
                last.steps.div_ceil(10),
                "one backward pass per K = 10 steps"
            );
            assert!(
                last.hebb_abs_mean.unwrap() > 0.0
                    && last.eta.is_some()
                    && last.modulator_mean.is_some()
            );
        } else {
            assert_eq!(last.backward_passes, last.steps);
        }
    }
}

#[test]
fn exported_safetensors_use_pytorch_names_and_layouts_and_reload_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = CifarAlexNet::new(10, 7, &test_device().device);
    let path = dir.path().join("m.safetensors");
    export_safetensors(&model, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert_eq!(
        header["features.0.weight"]["shape"],
        serde_json::json!([64, 3, 11, 11])
    );
    assert_eq!(
        header["features.10.bias"]["shape"],
        serde_json::json!([256])
    );
    assert_eq!(
        header["classifier.weight"]["shape"],
        serde_json::json!([10, 256]),
        "PyTorch's out×in"
    );

    let reloaded = load_source_features(&path, 99, &test_device().device).unwrap();
    let original = model.features.conv4.weight.val().into_data();
    assert_eq!(reloaded.conv4.weight.val().into_data(), original);

    let missing = dir.path().join("nope.pt");
    assert!(load_source_features(&missing, 0, &test_device().device).is_err());
}

#[test]
fn fine_tuning_trains_the_features_unless_they_are_frozen() {
    let data = generated_task_data("T1", 4);
    let conv1 = |features: &AlexNetFeatures| -> Vec<f32> {
        features
            .conv1
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    // The source features arrive on the plain (non-autodiff) device, as a job loads them.
    let before = conv1(&random_features(3));
    for freeze_features in [false, true] {
        let method = Method::Stl;
        let run_dir = tempfile::tempdir().unwrap();
        let config = FinetuneConfig {
            method,
            lifetimes: 1,
            lr: 1e-2,
            freeze_features,
            ..FinetuneConfig::default()
        };
        let outcome = run_finetune(
            &config,
            random_features(3),
            "src",
            &data,
            &test_device(),
            Some(run_dir.path()),
            &mut NoObserver,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(outcome.history.len(), 1);
        // The trained parameters, as the lifetime's checkpoint holds them.
        use burn::module::Module;
        let trained = CifarAlexNet::new(10, 0, &test_device().device)
            .try_load_file(run_dir.path().join("checkpoint/model.bpk"))
            .unwrap();
        let after = conv1(&trained.features);
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        if freeze_features {
            assert_eq!(changed, 0, "frozen features stay as they were");
        } else {
            assert!(
                changed > before.len() / 2,
                "{method:?}: only {changed} of {} conv1 weights changed: the features did not train",
                before.len()
            );
        }
    }
}

/// Evaluation runs through the prefetch thread. Its figures must not depend on how the test
/// set is cut into batches (a last partial batch included), it must count every test image
/// once, and with a constant classifier it must give the hand-computed values: loss ln C, and
/// top-1 equal to the share of class 0 (argmax breaks ties towards the first class).
#[test]
fn evaluation_counts_every_test_image_whatever_the_batch_size() {
    use burn::module::Param;
    use burn::tensor::Tensor;
    use ndhtl_agent::train::lifetime::{evaluate, inference_view};

    let data = generated_task_data("T1", 2);
    let device = test_device();
    let test_images = data.test.len();
    assert_eq!(
        test_images, 100,
        "T1: 10 classes × 10 generated test images"
    );

    let model = CifarAlexNet::new(10, 11, &device.device);
    let (inference, _) = inference_view(&model, None);
    let whole = evaluate(&inference, None, &data.test, test_images, &device.device);
    assert_eq!(whole.images, test_images);
    for batch_size in [1, 7, 64] {
        let cut = evaluate(&inference, None, &data.test, batch_size, &device.device);
        assert_eq!(cut.images, test_images, "batch size {batch_size}");
        assert_eq!(cut.top1, whole.top1, "batch size {batch_size}");
        assert_eq!(cut.top5, whole.top5, "batch size {batch_size}");
        assert!(
            (cut.loss - whole.loss).abs() < 1e-5 * whole.loss.abs().max(1.0),
            "batch size {batch_size}: loss {} against {}",
            cut.loss,
            whole.loss
        );
    }

    let mut constant = model.clone();
    let [features, classes] = constant.classifier.weight.dims();
    constant.classifier.weight =
        Param::from_tensor(Tensor::zeros([features, classes], &device.device));
    constant.classifier.bias = Some(Param::from_tensor(Tensor::zeros([classes], &device.device)));
    let (inference, _) = inference_view(&constant, None);
    let flat = evaluate(&inference, None, &data.test, 7, &device.device);
    let class_zero = data.test.labels.iter().filter(|&&label| label == 0).count();
    assert!(
        (flat.loss - (classes as f64).ln()).abs() < 1e-5,
        "loss {}",
        flat.loss
    );
    assert_eq!(flat.top1, 100.0 * class_zero as f64 / test_images as f64);
    assert_eq!(flat.images, test_images);
}

/// The training loop's metrics are reduced on the device every `STEPS_PER_REDUCTION` steps
/// (`train::step_metrics`). Over more steps than one reduction, with a partial last batch, they
/// must give the hand-computed totals: each step's loss weighted by its batch's size, the hits
/// of the largest logits, and the mean of the steps' batch-mean modulators.
#[test]
fn step_metrics_give_the_hand_computed_totals_across_reductions_and_a_partial_batch() {
    use burn::tensor::{Int, Tensor, TensorData};
    use ndhtl_agent::train::step_metrics::{STEPS_PER_REDUCTION, StepMetrics};

    const CLASSES: usize = 4;
    let device = test_device().autodiff();
    let steps = STEPS_PER_REDUCTION + 44;
    for (batch_size, last_size, with_modulator) in [(1, 1, true), (3, 2, true), (3, 3, false)] {
        let mut metrics = StepMetrics::new(batch_size);
        let (mut loss_sum, mut hits, mut images, mut modulator_sum) = (0.0f64, 0usize, 0, 0.0f64);
        for step in 0..steps {
            let size = if step + 1 == steps {
                last_size
            } else {
                batch_size
            };
            let loss = 0.5 + (step % 7) as f32 * 0.25;
            let mut logits = vec![0.0f32; size * CLASSES];
            let mut targets = Vec::with_capacity(size);
            let mut modulator = Vec::with_capacity(size);
            for row in 0..size {
                let predicted = (step + row) % CLASSES;
                logits[row * CLASSES + predicted] = 1.0;
                let target = (step * 7 + row * 3) % CLASSES;
                targets.push(target as i64);
                hits += usize::from(predicted == target);
                modulator.push(((step * 3 + row) % 5) as f32 * 0.1 - 0.2);
            }
            loss_sum += f64::from(loss) * size as f64;
            images += size;
            modulator_sum += modulator.iter().map(|&m| f64::from(m)).sum::<f64>() / size as f64;
            metrics.record(
                Tensor::from_data(TensorData::new(vec![loss], [1]), &device),
                Tensor::from_data(TensorData::new(logits, [size, CLASSES]), &device),
                Tensor::<1, Int>::from_data(TensorData::new(targets, [size]), &device),
                with_modulator
                    .then(|| Tensor::from_data(TensorData::new(modulator, [size, 1]), &device)),
            );
        }
        let totals = metrics.finish();
        let case = format!("batch {batch_size}, last batch {last_size}");
        assert_eq!(totals.steps, steps, "{case}");
        assert_eq!(totals.images, images, "{case}");
        assert!(
            hits > 0 && hits < images,
            "{case}: the pattern hits some rows, not all"
        );
        assert_eq!(totals.top1, 100.0 * hits as f64 / images as f64, "{case}");
        let expected_loss = loss_sum / images as f64;
        assert!(
            (totals.loss - expected_loss).abs() < 1e-5 * expected_loss,
            "{case}: loss {} against {expected_loss}",
            totals.loss
        );
        match totals.modulator_mean {
            Some(mean) => {
                let expected = modulator_sum / steps as f64;
                assert!(with_modulator, "{case}: no modulator was recorded");
                assert!(
                    (mean - expected).abs() < 1e-6,
                    "{case}: mean m {mean} against {expected}"
                );
            }
            None => assert!(!with_modulator, "{case}: the modulator is missing"),
        }
    }
}

/// End to end through the real loop: at learning rate 0 the model does not change, so a
/// lifetime's training loss and top-1 (gathered step by step, shuffled, a partial last batch
/// at batch 7, more steps than one reduction at batch 1) are the evaluation's figures on the
/// same images.
#[test]
fn a_lifetime_at_learning_rate_zero_reports_the_evaluation_figures_of_its_images() {
    use ndhtl_agent::train::finetune::{assemble_finetune_model, finetune_loop_settings};
    use ndhtl_agent::train::lifetime::{TrainingState, evaluate, inference_view, train_lifetime};
    use ndhtl_agent::train::optimizer::build_optimizer;
    use ndhtl_agent::train::step_metrics::STEPS_PER_REDUCTION;

    let data = generated_task_data("T1", 30);
    let images = data.train.len();
    assert_eq!(images, 300, "T1: 10 classes × 30 generated training images");
    assert!(images > STEPS_PER_REDUCTION, "batch 1 crosses a reduction");
    let device = test_device();
    let training = device.autodiff();
    for batch_size in [7, 1] {
        let config = FinetuneConfig {
            method: Method::Stl,
            batch_size,
            augment: false,
            seed: 4,
            ..FinetuneConfig::default()
        };
        let settings = finetune_loop_settings(&config);
        let model = assemble_finetune_model(random_features(6), &config, 10, &training);
        let optimizer = build_optimizer(&model, config.momentum, config.weight_decay);
        let state = TrainingState {
            model,
            optimizer,
            hebbian: None,
        };
        let (state, totals) = train_lifetime(
            state,
            &settings,
            0,
            0.0,
            &data.train,
            &training,
            &mut NoObserver,
            &CancelToken::new(),
        )
        .unwrap();
        let (inference, _) = inference_view(&state.model, None);
        let evaluated = evaluate(&inference, None, &data.train, batch_size, &device.device);
        assert_eq!(totals.images, images, "batch {batch_size}");
        assert_eq!(
            totals.steps,
            images.div_ceil(batch_size),
            "batch {batch_size}"
        );
        assert!(
            (totals.loss - evaluated.loss).abs() < 1e-4 * evaluated.loss,
            "batch {batch_size}: training loss {} against evaluation {}",
            totals.loss,
            evaluated.loss
        );
        // The same logits, computed in other batches: at most a near tie may round the other way.
        assert!(
            (totals.top1 - evaluated.top1).abs() <= 100.0 / images as f64 + 1e-9,
            "batch {batch_size}: training top-1 {} against evaluation {}",
            totals.top1,
            evaluated.top1
        );
        assert!(
            evaluated.top1 > 0.0,
            "a test that counts nothing proves nothing"
        );
    }
}
