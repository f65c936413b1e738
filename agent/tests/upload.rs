//! Host values onto the compute device (`ndhtl_agent::upload`): what every training step and
//! evaluation batch goes through.
//!
//! On libtorch's CUDA devices uploads are pinned and asynchronous, so `NDHTL_TEST_DEVICE=tch:cuda:0`
//! (deploy/gpu-check.sh) tests that path: values, many uploads in flight before anything waits,
//! a source buffer overwritten right after its upload, and gradients through the uploaded
//! images. On flex and libtorch's CPU (`tch:cpu` in CI) it is Burn's `Tensor::from_data`, and the
//! same tests pin that.

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use ndhtl_agent::device::ComputeDevice;
use ndhtl_agent::upload::{float_to_device, int_to_device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn compute_device() -> ComputeDevice {
    ComputeDevice::for_tests()
}

fn random_floats(seed: u64, count: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(|_| rng.random_range(-3.0..3.0)).collect()
}

fn floats<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_into_vec::<f32>().unwrap()
}

fn ints<const D: usize>(tensor: Tensor<D, Int>) -> Vec<i64> {
    tensor
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap()
}

/// On a GPU: libtorch has not refused a pinned upload in this process (it would have fallen
/// back to the pageable copy without failing).
fn pinned_uploads_not_refused() {
    #[cfg(feature = "tch")]
    if compute_device().is_gpu() {
        assert!(
            !ndhtl_agent::upload_torch::pinned_uploads_refused(),
            "libtorch refused a pinned upload: the pageable fallback ran"
        );
    }
}

#[test]
fn uploads_keep_every_value_shape_and_type_on_plain_and_autodiff_devices() {
    let compute = compute_device();
    for device in [compute.device.clone(), compute.autodiff()] {
        let pixels = random_floats(1, 2 * 3 * 32 * 32);
        let images = float_to_device(pixels.clone(), [2, 3, 32, 32], &device);
        assert_eq!(images.dims(), [2, 3, 32, 32]);
        assert_eq!(images.device(), device);
        assert_eq!(images.is_autodiff(), device.is_autodiff());
        assert_eq!(floats(images), pixels, "bit for bit, in row-major order");

        // Within i32: flex stores integers as i32.
        let labels = vec![0, 9, 3, -1, i64::from(i32::MAX), 7];
        let uploaded = int_to_device(labels.clone(), [6], &device);
        assert_eq!(uploaded.dims(), [6]);
        assert_eq!(uploaded.is_autodiff(), device.is_autodiff());
        assert_eq!(ints(uploaded), labels);

        // The same tensor as Burn's own upload.
        let reference =
            Tensor::<2>::from_data(TensorData::new(pixels[..12].to_vec(), [3, 4]), &device);
        let borrowed = float_to_device(&pixels[..12], [3, 4], &device);
        assert_eq!(floats(borrowed), floats(reference));
    }
    pinned_uploads_not_refused();
}

#[test]
fn many_uploads_in_flight_before_any_read_each_keep_their_own_values() {
    // 64 batch-1 uploads and 8 large ones are queued before the first read: if a pinned block
    // were reused before its asynchronous copy had finished, a later batch would overwrite an
    // earlier one.
    let device = compute_device().device;
    let sources: Vec<Vec<f32>> = (0..64)
        .map(|seed| random_floats(seed, 3 * 32 * 32))
        .collect();
    let large: Vec<Vec<f32>> = (0..8)
        .map(|seed| random_floats(100 + seed, 256 * 3 * 32 * 32))
        .collect();
    let uploaded: Vec<Tensor<4>> = sources
        .iter()
        .map(|values| float_to_device(values.clone(), [1, 3, 32, 32], &device))
        .collect();
    let uploaded_large: Vec<Tensor<4>> = large
        .iter()
        .map(|values| float_to_device(&values[..], [256, 3, 32, 32], &device))
        .collect();
    // Work on the device that reads every upload, queued behind the copies.
    let sums: Vec<Tensor<1>> = uploaded.iter().map(|t| t.clone().sum()).collect();
    for (index, (tensor, values)) in uploaded.into_iter().zip(&sources).enumerate() {
        assert_eq!(&floats(tensor), values, "batch-1 upload {index}");
    }
    for (index, (tensor, values)) in uploaded_large.into_iter().zip(&large).enumerate() {
        assert_eq!(&floats(tensor), values, "batch-256 upload {index}");
    }
    for (sum, values) in sums.into_iter().zip(&sources) {
        let expected: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let got = f64::from(floats(sum)[0]);
        assert!((got - expected).abs() < 1e-3, "sum {got} vs {expected}");
    }
    pinned_uploads_not_refused();
}

#[test]
fn a_borrowed_source_can_be_overwritten_as_soon_as_the_upload_returns() {
    let device = compute_device().device;
    let mut buffer = random_floats(7, 1000 * 3 * 32 * 32);
    let original = buffer.clone();
    let uploaded = float_to_device(&buffer[..], [1000, 3, 32, 32], &device);
    buffer.iter_mut().for_each(|value| *value = f32::NAN);
    drop(buffer);
    assert_eq!(floats(uploaded), original);
    pinned_uploads_not_refused();
}

#[test]
fn gradients_flow_through_uploaded_images_to_the_weights_but_not_into_them() {
    // loss = Σ w·x with w trainable and x uploaded: ∂loss/∂w = Σ over the batch of x, by hand.
    let device = compute_device().autodiff();
    let pixels: Vec<f32> = vec![1.0, -2.0, 0.5, 4.0, 3.0, 0.25];
    let images: Tensor<2> = float_to_device(pixels.clone(), [2, 3], &device);
    let weights = Param::from_tensor(Tensor::<2>::from_data(
        TensorData::new(vec![0.5f32, -1.0, 2.0], [3, 1]),
        &device,
    ));
    let loss = images.clone().matmul(weights.val()).sum();
    assert!((floats(loss.clone())[0] - (0.5 + 2.0 + 1.0 + 2.0 - 3.0 + 0.5)).abs() < 1e-6);
    let gradients = loss.backward();
    let weight_gradient = weights.val().grad(&gradients).expect("weights are trained");
    assert_eq!(
        weight_gradient.into_data().try_into_vec::<f32>().unwrap(),
        vec![5.0, 1.0, 0.75]
    );
    assert!(images.grad(&gradients).is_none(), "images are constants");
    pinned_uploads_not_refused();
}

/// Without a GPU libtorch refuses to pin for CUDA: that must come back as a refusal (the caller
/// then takes the pageable copy), not as a crash or a panic.
#[cfg(feature = "tch")]
#[test]
#[allow(deprecated)] // burn-tch is deprecated upstream, but it is the only GPU path buildable here
fn a_refused_pinned_upload_is_reported_and_not_a_crash() {
    use ndhtl_agent::upload_torch::{pinned_float, pinned_uploads_refused};
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has a GPU, where libtorch does not refuse");
        return;
    }
    let values = random_floats(11, 12);
    let cuda = burn::tensor::Device::libtorch_cuda(0);
    assert!(pinned_float(&values, [3, 4], &cuda).is_none());
    assert!(pinned_uploads_refused());
    // Later uploads do not try again.
    assert!(pinned_float(&values, [3, 4], &cuda).is_none());
}
