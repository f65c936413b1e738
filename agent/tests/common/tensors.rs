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

/// Asserts `worst_difference(ours, expected) ≤ tolerance`, and that `expected` is not all zero
/// (which would prove nothing), naming `what` and showing the first values of each.
pub fn assert_close(what: &str, ours: &[f64], expected: &[f64], tolerance: f64) {
    let worst = worst_difference(ours, expected);
    assert!(
        worst <= tolerance,
        "{what}: differs by {worst:e} (> {tolerance:e})\n ours:     {:?}\n expected: {:?}",
        &ours[..ours.len().min(8)],
        &expected[..expected.len().min(8)]
    );
    assert!(
        expected.iter().any(|value| *value != 0.0),
        "{what}: all zero proves nothing"
    );
}

/// `Σ values ⊙ weights`: the scalar objective whose gradient a probe test checks.
pub fn weighted_sum(values: &[f64], weights: &[f32]) -> f64 {
    assert_eq!(values.len(), weights.len(), "a weight per value");
    values
        .iter()
        .zip(weights)
        .map(|(v, w)| v * f64::from(*w))
        .sum()
}

/// Asserts that `gradient[i]` equals the central difference
/// `(objective(x + step·eᵢ) − objective(x − step·eᵢ)) / 2·step` within
/// `tolerance · (1 + |difference|)`, for each `i` of `indices`; returns how many were checked.
pub fn assert_gradient_matches_central_differences(
    what: &str,
    x: &[f32],
    gradient: &[f64],
    indices: impl IntoIterator<Item = usize>,
    step: f32,
    tolerance: f64,
    mut objective: impl FnMut(&[f32]) -> f64,
) -> usize {
    assert_eq!(x.len(), gradient.len(), "{what}: a gradient per element");
    let mut checked = 0;
    for index in indices {
        let mut plus = x.to_vec();
        plus[index] += step;
        let mut minus = x.to_vec();
        minus[index] -= step;
        let numeric = (objective(&plus) - objective(&minus)) / (2.0 * f64::from(step));
        assert!(
            (gradient[index] - numeric).abs() <= tolerance * (1.0 + numeric.abs()),
            "{what}: element {index}: autodiff {} vs central difference {numeric}",
            gradient[index]
        );
        checked += 1;
    }
    checked
}

#[test]
fn central_differences_check_a_known_gradient_and_catch_a_wrong_one() {
    // f(x) = x₀² + 3 x₁: ∇f = (2 x₀, 3); central differences are exact for it but for rounding.
    let objective = |x: &[f32]| f64::from(x[0]).powi(2) + 3.0 * f64::from(x[1]);
    let x = [1.5f32, -2.0];
    let checked = assert_gradient_matches_central_differences(
        "f",
        &x,
        &[3.0, 3.0],
        0..2,
        1e-2,
        1e-6,
        objective,
    );
    assert_eq!(checked, 2);
    let wrong = std::panic::catch_unwind(|| {
        assert_gradient_matches_central_differences(
            "f",
            &x,
            &[3.0, 2.9],
            0..2,
            1e-2,
            1e-3,
            objective,
        )
    });
    assert!(wrong.is_err(), "a gradient 3 % off passed");
}

#[test]
fn worst_difference_is_relative_to_the_expected_value() {
    // |12 − 10| / 11 and |0.5 − 0| / 1: the second is worse.
    assert_eq!(worst_difference(&[12.0, 0.5], &[10.0, 0.0]), 0.5);
    assert_eq!(worst_difference(&[1.0, -2.0], &[1.0, -2.0]), 0.0);
}
