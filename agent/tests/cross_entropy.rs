//! Cross-entropy as one graph node (`model::cross_entropy`): values and gradients of every
//! reduction by hand, by central differences, and against Burn's chain of nodes
//! (`loss::burns_cross_entropy`) on the same device, tracked and untracked. On libtorch the
//! node is ATen's `_log_softmax`, `nll_loss_forward` and their backwards (PyTorch's kernels),
//! so `NDHTL_TEST_DEVICE=tch:cpu` (CI) or `tch:cuda:0` (deploy/gpu-check.sh) tests that path;
//! on flex it is Burn's forward and the closed-form backward in backend operations.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ndhtl_agent::device::ComputeDevice;
use ndhtl_agent::model::cross_entropy::{LossReduction, cross_entropy_loss};
use ndhtl_agent::model::loss::burns_cross_entropy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/tensors.rs"]
mod tensors;
use tensors::{assert_close, assert_gradient_matches_central_differences, host, weighted_sum};

const REDUCTIONS: [LossReduction; 3] = [
    LossReduction::PerSample,
    LossReduction::Mean,
    LossReduction::Sum,
];

fn device() -> Device {
    ComputeDevice::for_tests().autodiff()
}

fn logits_tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

fn targets_tensor(targets: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(targets.to_vec(), [targets.len()]), device)
}

type Loss = fn(Tensor<2>, Tensor<1, Int>, LossReduction) -> Tensor<1>;

/// The loss and the gradient of `Σ loss ⊙ probe` with respect to the logits (`probe` has one
/// weight per sample, or one for a reduced loss).
fn value_and_gradient(
    loss: Loss,
    reduction: LossReduction,
    logits: &[f32],
    shape: [usize; 2],
    targets: &[i64],
    probe: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let device = device();
    let x = logits_tensor(logits, shape, &device).require_grad();
    let value = loss(x.clone(), targets_tensor(targets, &device), reduction);
    let probe = Tensor::<1>::from_data(TensorData::new(probe.to_vec(), [probe.len()]), &device);
    let grads = (value.clone() * probe).sum().backward();
    let gradient = x.grad(&grads).expect("the logits are tracked");
    (host(value), host(gradient))
}

fn probe_for(reduction: LossReduction, batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let count = if reduction == LossReduction::PerSample {
        batch
    } else {
        1
    };
    (0..count).map(|_| rng.random_range(0.5..2.0)).collect()
}

#[test]
fn values_and_gradients_equal_the_hand_computed_ones() {
    // Row 0: logits 1, 2, 3, target 2. Row 1: equal logits, target 1.
    let logits = [1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0];
    let targets = [2i64, 1];
    let row0_sum = 1f64.exp() + 2f64.exp() + 3f64.exp();
    let row0_loss = row0_sum.ln() - 3.0; // ≈ 0.407606
    let row1_loss = 3f64.ln(); // ≈ 1.098612
    assert!((row0_loss - 0.407_605_964).abs() < 1e-8);
    // softmax − one-hot, per row.
    let row0_grad = [
        1f64.exp() / row0_sum,
        2f64.exp() / row0_sum,
        3f64.exp() / row0_sum - 1.0,
    ];
    let row1_grad = [1.0 / 3.0, 1.0 / 3.0 - 1.0, 1.0 / 3.0];
    for reduction in REDUCTIONS {
        let probe = match reduction {
            LossReduction::PerSample => vec![2.0f32, 0.5],
            _ => vec![3.0f32],
        };
        let (value, gradient) = value_and_gradient(
            cross_entropy_loss,
            reduction,
            &logits,
            [2, 3],
            &targets,
            &probe,
        );
        let (expected_value, weights): (Vec<f64>, [f64; 2]) = match reduction {
            LossReduction::PerSample => (vec![row0_loss, row1_loss], [2.0, 0.5]),
            LossReduction::Mean => (vec![(row0_loss + row1_loss) / 2.0], [1.5, 1.5]),
            LossReduction::Sum => (vec![row0_loss + row1_loss], [3.0, 3.0]),
        };
        let expected_gradient: Vec<f64> = row0_grad
            .iter()
            .map(|g| g * weights[0])
            .chain(row1_grad.iter().map(|g| g * weights[1]))
            .collect();
        assert_close(
            &format!("{reduction:?}: loss"),
            &value,
            &expected_value,
            1e-6,
        );
        assert_close(
            &format!("{reduction:?}: gradient"),
            &gradient,
            &expected_gradient,
            1e-6,
        );
    }
}

#[test]
fn values_and_gradients_equal_burns_chain_of_nodes() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    // Batch 1 (the paper's regime), a small batch and a CIFAR-100 target's width.
    for (batch, classes) in [(1usize, 10usize), (7, 10), (16, 100)] {
        let logits: Vec<f32> = (0..batch * classes)
            .map(|_| rng.random_range(-4.0..4.0))
            .collect();
        let targets: Vec<i64> = (0..batch)
            .map(|_| rng.random_range(0..classes as i64))
            .collect();
        for reduction in REDUCTIONS {
            let probe = probe_for(reduction, batch, batch as u64);
            let shape = [batch, classes];
            let ours = value_and_gradient(
                cross_entropy_loss,
                reduction,
                &logits,
                shape,
                &targets,
                &probe,
            );
            let burns = value_and_gradient(
                burns_cross_entropy,
                reduction,
                &logits,
                shape,
                &targets,
                &probe,
            );
            let what = format!("batch {batch}, {classes} classes, {reduction:?}");
            assert_close(&format!("{what}: loss"), &ours.0, &burns.0, 1e-6);
            assert_close(&format!("{what}: gradient"), &ours.1, &burns.1, 1e-6);
            // Each row of a cross-entropy gradient sums to 0 (softmax sums to 1).
            for (row, values) in ours.1.chunks(classes).enumerate() {
                let total: f64 = values.iter().sum();
                assert!(total.abs() < 1e-5, "{what}: row {row} sums to {total}");
            }
        }
    }
}

#[test]
fn untracked_values_equal_burns() {
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let device = ComputeDevice::for_tests().device;
    let logits: Vec<f32> = (0..50).map(|_| rng.random_range(-3.0..3.0)).collect();
    let targets: Vec<i64> = (0..5).map(|_| rng.random_range(0..10)).collect();
    for reduction in REDUCTIONS {
        let x = logits_tensor(&logits, [5, 10], &device);
        let ours = cross_entropy_loss(x.clone(), targets_tensor(&targets, &device), reduction);
        let burns = burns_cross_entropy(x, targets_tensor(&targets, &device), reduction);
        assert_close(&format!("{reduction:?}"), &host(ours), &host(burns), 1e-6);
    }
}

#[test]
fn gradients_equal_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    let shape = [3, 4];
    let logits: Vec<f32> = (0..12).map(|_| rng.random_range(-2.0..2.0)).collect();
    let targets = [3i64, 0, 2];
    for reduction in REDUCTIONS {
        let probe = probe_for(reduction, shape[0], 7);
        let (_, gradient) = value_and_gradient(
            cross_entropy_loss,
            reduction,
            &logits,
            shape,
            &targets,
            &probe,
        );
        assert_gradient_matches_central_differences(
            &format!("{reduction:?}"),
            &logits,
            &gradient,
            0..logits.len(),
            1e-2,
            1e-3,
            |x| {
                let (value, _) =
                    value_and_gradient(cross_entropy_loss, reduction, x, shape, &targets, &probe);
                weighted_sum(&value, &probe)
            },
        );
    }
}
