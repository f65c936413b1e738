//! Clamping to `[min, max]` as one graph node, whose backward is one kernel on libtorch.
//!
//! Burn 0.22's autodiff has no clamp of its own: `clamp` runs the backend trait's composite,
//! `clamp_min(clamp_max(x))`, each half a comparison and a masked fill (a graph node), and
//! each masked fill's backward another masked fill: six ATen operators per clamp of the
//! Hebbian trace (P6) on libtorch, on a GPU six kernel launches, and one NDHTL window of
//! K = 10 images runs ten of them. Here it is two.
//!
//! One node: the backend's own `clamp` forward, and the backward
//!
//! ```text
//! dx = g  where min ≤ x ≤ max,   0 elsewhere
//! ```
//!
//! (PyTorch's convention and Burn's: the gradient passes at the bounds themselves). On
//! libtorch that is ATen's `hardtanh_backward`, one kernel, which passes the gradient strictly
//! inside its bounds, so it is given the bounds moved out by one float (`min⁻`, `max⁺`): for
//! an `f32` x, `min⁻ < x < max⁺` exactly when `min ≤ x ≤ max`. Elsewhere the backward is a
//! comparison per bound and one masked fill. The values and gradients are Burn's bit for bit
//! (`tests/clamp.rs`).
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
    get_or_init_device_settings,
};
use burn::tensor::Tensor;

/// Clamping and the product of its Jacobian with an output gradient. The default bodies are
/// Burn's forward and the formula above in backend operations; libtorch replaces the
/// backward, and autodiff wires them into one node.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait ClampBackend: Backend {
    fn fused_clamp(x: FloatTensor<Self>, min: f32, max: f32) -> FloatTensor<Self> {
        Self::float_clamp(x, min.into(), max.into())
    }

    /// `grad` where `min ≤ input ≤ max`, 0 elsewhere (`input` is the clamp's input).
    fn fused_clamp_backward(
        input: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        min: f32,
        max: f32,
    ) -> FloatTensor<Self> {
        let bool_dtype = get_or_init_device_settings::<Self>(&input.device()).bool_dtype;
        let below = Self::float_lower_elem(input.clone(), min.into(), bool_dtype);
        let above = Self::float_greater_elem(input, max.into(), bool_dtype);
        Self::float_mask_fill(grad, Self::bool_or(below, above), 0f32.into())
    }
}

impl ClampBackend for Flex {}

#[cfg(feature = "tch")]
impl ClampBackend for burn::backend::LibTorch {
    fn fused_clamp_backward(
        input: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        min: f32,
        max: f32,
    ) -> FloatTensor<Self> {
        debug_assert_eq!(
            input.tensor.kind(),
            tch::Kind::Float,
            "the open bounds are one f32 apart from the closed ones"
        );
        let (open_min, open_max) = open_bounds(min, max);
        // tch's receiver is ATen's `self`, the input; `grad_output` is the argument.
        burn::backend::libtorch::TchTensor::new(input.tensor.hardtanh_backward(
            &grad.tensor,
            f64::from(open_min),
            f64::from(open_max),
        ))
    }
}

/// The bounds moved out by one `f32`: for every `f32` x (NaN aside),
/// `open_min < x < open_max` exactly when `min ≤ x ≤ max`.
pub fn open_bounds(min: f32, max: f32) -> (f32, f32) {
    (min.next_down(), max.next_up())
}

/// The clamp node; its backward state is the input and the bounds.
#[derive(Debug, Clone, Copy)]
struct ClampStep;

impl<B: ClampBackend> Backward<B, 1> for ClampStep {
    type State = (FloatTensor<B>, f32, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (input, min, max) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::fused_clamp_backward(input, grad, min, max)
        });
    }
}

impl<B: ClampBackend, C: CheckpointStrategy> ClampBackend for Autodiff<B, C> {
    fn fused_clamp(x: FloatTensor<Self>, min: f32, max: f32) -> FloatTensor<Self> {
        // Memory-bound would recompute the input; it is kept instead (one tensor, as Burn's
        // composite keeps two masks).
        match ClampStep
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let input = x.into_primitive();
                // The kept handle marks the input shared, so no later operation updates it in
                // place before the backward reads it.
                let output = B::fused_clamp(input.clone(), min, max);
                prep.finish((input, min, max), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_clamp(x.into_primitive(), min, max)),
        }
    }
}

/// `x` clamped to `[min, max]`: Burn's values and gradients, one graph node.
pub fn clamp<const D: usize>(x: Tensor<D>, min: f32, max: f32) -> Tensor<D> {
    debug_assert!(min <= max, "clamp to an empty interval [{min}, {max}]");
    Tensor::from_dispatch(<Dispatch as ClampBackend>::fused_clamp(
        x.into_dispatch(),
        min,
        max,
    ))
}

#[cfg(test)]
mod tests {
    use super::open_bounds;

    #[test]
    fn the_open_bounds_admit_exactly_the_closed_interval() {
        for (min, max) in [
            (-1.0f32, 1.0f32),
            (-0.05, 0.05),
            (-1e-30, 3.5e8),
            (0.0, 0.0),
        ] {
            let (open_min, open_max) = open_bounds(min, max);
            let inside = |x: f32| open_min < x && x < open_max;
            assert!(inside(min) && inside(max), "[{min}, {max}]: the bounds");
            assert!(
                !inside(min.next_down()) && !inside(max.next_up()),
                "[{min}, {max}]: one float outside"
            );
        }
    }
}
