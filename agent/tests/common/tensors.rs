//! Reading tensors back and comparing their values, for the numerical tests. Included by path
//! (`#[path = "common/tensors.rs"] mod tensors;`) so that a numerical test binary does not also
//! compile the cluster harness.
#![allow(dead_code)]

use burn::tensor::Tensor;

/// A float tensor's values on the host, as f64.
pub fn host<const N: usize>(tensor: Tensor<N>) -> Vec<f64> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Largest |a − b| / (1 + |b|): relative where `b` is large, absolute near zero.
pub fn worst_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f64::max)
}

#[test]
fn worst_difference_is_relative_to_the_expected_value() {
    // |12 − 10| / 11 and |0.5 − 0| / 1: the second is worse.
    assert_eq!(worst_difference(&[12.0, 0.5], &[10.0, 0.0]), 0.5);
    assert_eq!(worst_difference(&[1.0, -2.0], &[1.0, -2.0]), 0.0);
}
