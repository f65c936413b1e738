//! Getting at the backend tensors behind Burn's dispatch tensors, and handing them back
//! untouched when a fused path does not apply.

use burn::backend::{DispatchAutodiffContext, DispatchTensor, DispatchTensorKind};
use burn::tensor::Tensor;

/// The three tensors of one parameter's step.
pub struct Parts {
    param: DispatchTensor,
    grad: DispatchTensor,
    velocity: Option<DispatchTensor>,
}

impl Parts {
    pub fn new<const D: usize>(
        param: Tensor<D>,
        grad: Tensor<D>,
        velocity: Option<Tensor<D>>,
    ) -> Self {
        Parts {
            param: param.into_dispatch(),
            grad: grad.into_dispatch(),
            velocity: velocity.map(Tensor::into_dispatch),
        }
    }

    pub fn into_tensors<const D: usize>(self) -> (Tensor<D>, Tensor<D>, Option<Tensor<D>>) {
        (
            Tensor::from_dispatch(self.param),
            Tensor::from_dispatch(self.grad),
            self.velocity.map(Tensor::from_dispatch),
        )
    }
}

/// A finished step: the new parameter and velocity.
pub struct Done {
    param: DispatchTensor,
    velocity: Option<DispatchTensor>,
}

impl Done {
    pub fn into_tensors<const D: usize>(self) -> (Tensor<D>, Option<Tensor<D>>) {
        (
            Tensor::from_dispatch(self.param),
            self.velocity.map(Tensor::from_dispatch),
        )
    }
}

/// A backend's float tensor inside a [`DispatchTensorKind`].
pub trait BackendFloat: Sized {
    fn is(kind: &DispatchTensorKind) -> bool;
    /// The tensor of a kind that [`BackendFloat::is`] accepted.
    fn take(kind: DispatchTensorKind) -> Self;
    fn wrap(self) -> DispatchTensorKind;
}

/// What a backend path returns: the new parameter and velocity, or its inputs untouched.
pub type PathResult<T> = Result<(T, Option<T>), (T, T, Option<T>)>;

/// A backend path: hyperparameters, parameter, gradient, velocity.
pub type BackendPath<T> = fn(super::SgdHyper, T, T, Option<T>) -> PathResult<T>;

/// Runs `path` when all three tensors are `T`'s backend's; hands them back otherwise.
// `Parts` hands three tensors back by value, once per parameter per step: boxing them
// would cost an allocation for nothing.
#[allow(clippy::result_large_err)]
pub fn on_backend<T: BackendFloat>(
    hyper: super::SgdHyper,
    parts: Parts,
    path: BackendPath<T>,
) -> Result<Done, Parts> {
    let Parts {
        param,
        grad,
        velocity,
    } = parts;
    let same_backend =
        T::is(&param.kind) && T::is(&grad.kind) && velocity.as_ref().is_none_or(|v| T::is(&v.kind));
    if !same_backend {
        return Err(Parts {
            param,
            grad,
            velocity,
        });
    }
    let param_context = param.autodiff;
    let grad_context = grad.autodiff;
    // On the first step the gradient's buffer becomes the velocity, with its context.
    let velocity_context = velocity.as_ref().map_or(grad_context, |v| v.autodiff);
    let wrap = |tensor: T, autodiff: DispatchAutodiffContext| DispatchTensor {
        kind: tensor.wrap(),
        autodiff,
    };
    let outcome = path(
        hyper,
        T::take(param.kind),
        T::take(grad.kind),
        velocity.map(|v| T::take(v.kind)),
    );
    match outcome {
        Ok((param, velocity)) => Ok(Done {
            param: wrap(param, param_context),
            velocity: velocity.map(|v| wrap(v, velocity_context)),
        }),
        Err((param, grad, velocity)) => Err(Parts {
            param: wrap(param, param_context),
            grad: wrap(grad, grad_context),
            velocity: velocity.map(|v| wrap(v, velocity_context)),
        }),
    }
}
