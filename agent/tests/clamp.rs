//! Clamping as one graph node (`model::clamp`, the Hebbian trace's clip, P6): values and
//! gradients by hand (at, inside and outside the bounds), by central differences, and bit for
//! bit against Burn's `Tensor::clamp` on the same device. On libtorch the backward is ATen's
//! `hardtanh_backward` with the bounds moved out by one float, so `NDHTL_TEST_DEVICE=tch:cpu`
//! (CI) or `tch:cuda:0` (deploy/gpu-check.sh) tests that path; on flex it is a comparison per
//! bound and a masked fill.

use burn::tensor::{Device, Tensor, TensorData};
use ndhtl_agent::device::ComputeDevice;
use ndhtl_agent::model::clamp::clamp;
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

fn ours(x: Tensor<2>, min: f32, max: f32) -> Tensor<2> {
    clamp(x, min, max)
}

fn burns(x: Tensor<2>, min: f32, max: f32) -> Tensor<2> {
    x.clamp(min, max)
}

/// The value of `clamp(x)` and the gradient of `Σ clamp(x) ⊙ probe` with respect to `x`.
fn value_and_gradient(
    function: fn(Tensor<2>, f32, f32) -> Tensor<2>,
    (min, max): (f32, f32),
    x_values: &[f32],
    probe_values: &[f32],
    shape: [usize; 2],
) -> (Vec<f64>, Vec<f64>) {
    let device = device();
    let x = tensor(x_values, shape, &device).require_grad();
    let probe = tensor(probe_values, shape, &device);
    let y = function(x.clone(), min, max);
    let grads = (y.clone() * probe).sum().backward();
    let gradient = x.grad(&grads).expect("x is tracked");
    (host(y), host(gradient))
}

#[test]
fn values_and_gradients_equal_the_hand_computed_ones() {
    // Below, at, inside and above the bounds: the gradient passes at the bounds themselves
    // (PyTorch's convention and Burn's) and just inside them, and is 0 just outside.
    let (min, max) = (-0.5f32, 2.0f32);
    let x = [
        -3.0f32,
        min,
        0.25,
        max,
        7.5,
        min.next_up(),
        max.next_down(),
        min.next_down(),
        max.next_up(),
    ];
    let probe = [2.0f32, 5.0, -3.0, 0.5, 7.0, 4.0, -1.5, 6.0, 8.0];
    let (value, gradient) = value_and_gradient(ours, (min, max), &x, &probe, [3, 3]);
    let expected_value: Vec<f64> = [
        min,
        min,
        0.25,
        max,
        max,
        min.next_up(),
        max.next_down(),
        min,
        max,
    ]
    .iter()
    .map(|v| f64::from(*v))
    .collect();
    assert_eq!(value, expected_value);
    assert_eq!(
        gradient,
        vec![0.0, 5.0, -3.0, 0.5, 0.0, 4.0, -1.5, 0.0, 0.0]
    );
}

#[test]
fn values_and_gradients_equal_burns_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let shape = [10, 37];
    let count = shape[0] * shape[1];
    // The clip of the paper's runs is small; the trace goes past it often.
    let (min, max) = (-0.05f32, 0.05f32);
    let mut x: Vec<f32> = (0..count).map(|_| rng.random_range(-0.1..0.1)).collect();
    x[3] = min;
    x[4] = max;
    x[5] = 0.0;
    let probe: Vec<f32> = (0..count).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ours = value_and_gradient(ours, (min, max), &x, &probe, shape);
    let burns = value_and_gradient(burns, (min, max), &x, &probe, shape);
    assert_eq!(ours.0, burns.0, "values");
    assert_eq!(ours.1, burns.1, "gradients");
    let passed = ours.1.iter().filter(|g| **g != 0.0).count();
    assert!(
        passed > count / 4 && passed < count * 3 / 4,
        "both branches taken ({passed} of {count} passed)"
    );
}

#[test]
fn untracked_values_equal_burns() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let values: Vec<f32> = (0..64).map(|_| rng.random_range(-3.0..3.0)).collect();
    let device = ComputeDevice::for_tests().device;
    let x = tensor(&values, [8, 8], &device);
    assert_eq!(host(clamp(x.clone(), -1.0, 1.5)), host(x.clamp(-1.0, 1.5)));
}

#[test]
fn gradients_equal_central_differences_away_from_the_bounds() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let shape = [3, 5];
    let count = shape[0] * shape[1];
    let (min, max) = (-1.0f32, 1.0f32);
    // At least 0.1 away from either bound, so that a step of 1e-2 never crosses one.
    let x: Vec<f32> = (0..count)
        .map(|i| match i % 3 {
            0 => rng.random_range(-0.9f32..0.9),
            1 => rng.random_range(1.1f32..3.0),
            _ => rng.random_range(-3.0f32..-1.1),
        })
        .collect();
    let probe: Vec<f32> = (0..count).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (_, gradient) = value_and_gradient(ours, (min, max), &x, &probe, shape);
    assert_gradient_matches_central_differences(
        "clamp",
        &x,
        &gradient,
        0..count,
        1e-2,
        1e-4,
        |x| {
            weighted_sum(
                &value_and_gradient(ours, (min, max), x, &probe, shape).0,
                &probe,
            )
        },
    );
    assert!(gradient.iter().any(|g| *g != 0.0) && gradient.contains(&0.0));
}
