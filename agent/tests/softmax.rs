//! The fused softmax and log-softmax (`model::softmax`): values and gradients by hand, by
//! central differences, and against Burn's composite on the same device, tracked and
//! untracked, along either axis. On libtorch their backward is ATen's fused kernel, so
//! `NDHTL_TEST_DEVICE=tch:cpu` (CI) or `tch:cuda:0` (deploy/gpu-check.sh) tests that path; on
//! flex it is the formulas in backend operations.

use burn::tensor::activation;
use burn::tensor::{Device, Tensor, TensorData};
use ndhtl_agent::device::ComputeDevice;
use ndhtl_agent::model::softmax::{log_softmax, softmax};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/tensors.rs"]
mod tensors;
use tensors::{assert_close, assert_gradient_matches_central_differences, host};

fn device() -> Device {
    ComputeDevice::for_tests().autodiff()
}

fn random_values(seed: u64, count: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(|_| rng.random_range(-2.0..2.0)).collect()
}

fn tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Which of the two functions, ours or Burn's.
#[derive(Clone, Copy, Debug)]
enum Function {
    Softmax,
    LogSoftmax,
}

impl Function {
    fn ours(self, x: Tensor<2>, dim: usize) -> Tensor<2> {
        match self {
            Function::Softmax => softmax(x, dim),
            Function::LogSoftmax => log_softmax(x, dim),
        }
    }

    fn burns(self, x: Tensor<2>, dim: usize) -> Tensor<2> {
        match self {
            Function::Softmax => activation::softmax(x, dim),
            Function::LogSoftmax => activation::log_softmax(x, dim),
        }
    }
}

#[test]
fn values_and_gradients_equal_the_hand_computed_ones() {
    let device = device();
    // exp(x) = 1, 2, 3: softmax = 1/6, 2/6, 3/6; log-softmax = ln(k/6).
    let x_values = [0.0f32, 2f32.ln(), 3f32.ln()];
    let probe = tensor(&[1.0, 0.0, 0.0], [1, 3], &device);

    let x = tensor(&x_values, [1, 3], &device).require_grad();
    let y = softmax(x.clone(), 1);
    assert_close(
        "softmax",
        &host(y.clone()),
        &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0],
        1e-6,
    );
    // L = y₀: ∂L/∂x_k = y₀ (δ₀ₖ − y_k) = 5/36, −2/36, −3/36.
    let grads = (y * probe.clone()).sum().backward();
    assert_close(
        "∂ softmax₀ / ∂x",
        &host(x.grad(&grads).expect("a gradient")),
        &[5.0 / 36.0, -2.0 / 36.0, -3.0 / 36.0],
        1e-6,
    );

    let x = tensor(&x_values, [1, 3], &device).require_grad();
    let o = log_softmax(x.clone(), 1);
    let expected: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|k| (k / 6.0).ln()).collect();
    assert_close("log-softmax", &host(o.clone()), &expected, 1e-6);
    // L = o₀: ∂L/∂x_k = δ₀ₖ − y_k = 5/6, −2/6, −3/6.
    let grads = (o * probe).sum().backward();
    assert_close(
        "∂ log-softmax₀ / ∂x",
        &host(x.grad(&grads).expect("a gradient")),
        &[5.0 / 6.0, -2.0 / 6.0, -3.0 / 6.0],
        1e-6,
    );
}

/// Output and input gradient of L = Σ probe ⊙ f(x) on a 3×5 input along `dim`.
fn output_and_gradient(
    function: Function,
    dim: usize,
    ours: bool,
    x_values: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let device = device();
    let probe = tensor(&random_values(9, 15), [3, 5], &device);
    let x = tensor(x_values, [3, 5], &device).require_grad();
    let y = if ours {
        function.ours(x.clone(), dim)
    } else {
        function.burns(x.clone(), dim)
    };
    let output = host(y.clone());
    let grads = (y * probe).sum().backward();
    (output, host(x.grad(&grads).expect("a gradient")))
}

#[test]
fn values_and_gradients_equal_burns_composite_along_either_axis() {
    let x_values = random_values(3, 15);
    for function in [Function::Softmax, Function::LogSoftmax] {
        for dim in [0, 1] {
            let (ours, ours_grad) = output_and_gradient(function, dim, true, &x_values);
            let (burns, burns_grad) = output_and_gradient(function, dim, false, &x_values);
            let what = format!("{function:?} along axis {dim}");
            assert_close(&format!("{what}: values"), &ours, &burns, 1e-6);
            assert_close(&format!("{what}: gradients"), &ours_grad, &burns_grad, 1e-5);
        }
    }
}

#[test]
fn gradients_equal_central_differences() {
    let device = device();
    let x_values = random_values(4, 15);
    for function in [Function::Softmax, Function::LogSoftmax] {
        for dim in [0, 1] {
            let (_, analytic) = output_and_gradient(function, dim, true, &x_values);
            // The probe of `output_and_gradient`.
            let loss_at = |values: &[f32]| -> f64 {
                let probe = tensor(&random_values(9, 15), [3, 5], &device);
                let y = function.ours(tensor(values, [3, 5], &device), dim);
                host((y * probe).sum())[0]
            };
            assert_gradient_matches_central_differences(
                &format!("{function:?} along axis {dim}"),
                &x_values,
                &analytic,
                0..x_values.len(),
                1e-2,
                2e-3,
                loss_at,
            );
            assert!(analytic.iter().any(|g| g.abs() > 1e-3));
        }
    }
}

/// A softmax output used twice, and fed into a second softmax and a log-softmax, as an NDHTL
/// step uses the logits (P2 and the loss): the gradients flowing back through several fused
/// nodes, and accumulating at a shared one, equal those of Burn's composite.
#[test]
fn chained_and_shared_uses_accumulate_as_burns_do() {
    let device = device();
    let x_values = random_values(6, 15);
    let probe = tensor(&random_values(7, 15), [3, 5], &device);
    let run = |ours: bool| -> Vec<f64> {
        let f = |function: Function, x: Tensor<2>, dim: usize| {
            if ours {
                function.ours(x, dim)
            } else {
                function.burns(x, dim)
            }
        };
        let x = tensor(&x_values, [3, 5], &device).require_grad();
        let y = f(Function::Softmax, x.clone(), 1);
        let twice = f(Function::Softmax, y.clone() * 3.0, 0);
        let logs = f(Function::LogSoftmax, x.clone() + y.clone(), 1);
        let loss = (twice * probe.clone()).sum() + (logs * y).sum();
        let grads = loss.backward();
        host(x.grad(&grads).expect("a gradient"))
    };
    assert_close("chained gradients", &run(true), &run(false), 1e-5);
}

#[test]
fn untracked_and_inference_values_equal_burns() {
    let test_device = ComputeDevice::for_tests();
    let x_values = random_values(8, 15);
    for device in [test_device.autodiff(), test_device.device.clone()] {
        for function in [Function::Softmax, Function::LogSoftmax] {
            let x = tensor(&x_values, [3, 5], &device);
            let ours = host(function.ours(x.clone(), 1));
            let burns = host(function.burns(x, 1));
            assert_close(&format!("{function:?} untracked"), &ours, &burns, 1e-6);
        }
    }
}
