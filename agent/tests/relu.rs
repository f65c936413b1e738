//! ReLU as one graph node (`model::relu`): values and gradients by hand, by central
//! differences, and bit for bit against Burn's `activation::relu` on the same device. On
//! libtorch the backward is ATen's `threshold_backward`, so `NDHTL_TEST_DEVICE=tch:cpu` (CI)
//! or `tch:cuda:0` (deploy/gpu-check.sh) tests that path; on flex it is Burn's own formula.

use burn::tensor::activation;
use burn::tensor::{Device, Tensor, TensorData};
use ndhtl_agent::device::ComputeDevice;
use ndhtl_agent::model::relu::relu;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/tensors.rs"]
mod tensors;
use tensors::{assert_gradient_matches_central_differences, host, weighted_sum};

fn device() -> Device {
    ComputeDevice::for_tests().autodiff()
}

fn tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// The value of `relu(x)` and the gradient of `Σ relu(x) ⊙ probe` with respect to `x`.
fn value_and_gradient(
    function: fn(Tensor<2>) -> Tensor<2>,
    x_values: &[f32],
    probe_values: &[f32],
    shape: [usize; 2],
) -> (Vec<f64>, Vec<f64>) {
    let device = device();
    let x = tensor(x_values, shape, &device).require_grad();
    let probe = tensor(probe_values, shape, &device);
    let y = function(x.clone());
    let grads = (y.clone() * probe).sum().backward();
    let gradient = x.grad(&grads).expect("x is tracked");
    (host(y), host(gradient))
}

#[test]
fn values_and_gradients_equal_the_hand_computed_ones() {
    // Below, at and above 0: the gradient at exactly 0 is 0, PyTorch's convention and Burn's.
    let x = [-1.5f32, 0.0, 0.25, 3.0, -0.0, 1e-30];
    let probe = [2.0f32, 5.0, -3.0, 0.5, 7.0, 4.0];
    let (value, gradient) = value_and_gradient(relu, &x, &probe, [2, 3]);
    assert_eq!(value, vec![0.0, 0.0, 0.25, 3.0, 0.0, f64::from(1e-30f32)]);
    assert_eq!(gradient, vec![0.0, 0.0, -3.0, 0.5, 0.0, 4.0]);
}

#[test]
fn values_and_gradients_equal_burns_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let shape = [8, 37];
    let count = shape[0] * shape[1];
    let mut x: Vec<f32> = (0..count).map(|_| rng.random_range(-2.0..2.0)).collect();
    x[5] = 0.0; // exactly at the kink
    let probe: Vec<f32> = (0..count).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ours = value_and_gradient(relu, &x, &probe, shape);
    let burns = value_and_gradient(activation::relu, &x, &probe, shape);
    assert_eq!(ours.0, burns.0, "values");
    assert_eq!(ours.1, burns.1, "gradients");
    assert!(
        ours.1.iter().any(|g| *g != 0.0) && ours.1.contains(&0.0),
        "both branches taken"
    );
}

#[test]
fn gradients_equal_central_differences_away_from_the_kink() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let shape = [3, 5];
    let count = shape[0] * shape[1];
    // At least 0.1 away from 0, so that a step of 1e-2 never crosses the kink.
    let x: Vec<f32> = (0..count)
        .map(|i| {
            let magnitude = rng.random_range(0.1f32..2.0);
            if i % 2 == 0 { magnitude } else { -magnitude }
        })
        .collect();
    let probe: Vec<f32> = (0..count).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (_, gradient) = value_and_gradient(relu, &x, &probe, shape);
    assert_gradient_matches_central_differences("relu", &x, &gradient, 0..count, 1e-2, 1e-4, |x| {
        weighted_sum(&value_and_gradient(relu, x, &probe, shape).0, &probe)
    });
}
