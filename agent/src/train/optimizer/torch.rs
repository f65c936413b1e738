//! The fused SGD step on libtorch tensors: the host loop on the CPU, in-place ATen kernels on
//! a GPU.
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use burn::backend::libtorch::TchTensor;
use burn::backend::{BackendTensor, DispatchTensorKind};

use super::SgdHyper;
use super::dispatch::{BackendFloat, Done, Parts, PathResult, on_backend};
use super::host::{HostBuffer, HostThreads, host_step_on};

impl HostBuffer for TchTensor {
    const THREADS: HostThreads = HostThreads::Caller;
    fn host_f32_mut(&mut self) -> Option<&mut [f32]> {
        if self.tensor.device() != tch::Device::Cpu || self.tensor.kind() != tch::Kind::Float {
            return None;
        }
        if !self.tensor.is_contiguous() {
            // A strided view (burn-tch's convolution backward narrows the weight gradients out
            // of a padded buffer): one copy into a buffer of our own.
            *self = TchTensor::new(self.tensor.contiguous());
        } else if !self.can_mut() {
            // Copy-on-write, as flex does: whoever shares the buffer keeps the old values.
            *self = TchTensor::new(self.tensor.copy());
        }
        debug_assert!(self.can_mut() && self.tensor.is_contiguous());
        let len = self.tensor.numel();
        let data = self.tensor.data_ptr() as *mut f32;
        // SAFETY: a contiguous f32 CPU tensor of `len` elements starting at `data_ptr`, whose
        // storage no other tensor references (`can_mut`), borrowed mutably for as long as
        // `self` is.
        Some(unsafe { std::slice::from_raw_parts_mut(data, len) })
    }
}

impl BackendFloat for TchTensor {
    fn is(kind: &DispatchTensorKind) -> bool {
        matches!(kind, DispatchTensorKind::LibTorch(BackendTensor::Float(_)))
    }
    fn take(kind: DispatchTensorKind) -> Self {
        match kind {
            DispatchTensorKind::LibTorch(BackendTensor::Float(tensor)) => tensor,
            _ => unreachable!("checked by BackendFloat::is"),
        }
    }
    fn wrap(self) -> DispatchTensorKind {
        DispatchTensorKind::LibTorch(BackendTensor::Float(self))
    }
}

/// The host loop on libtorch CPU tensors.
// `Parts` hands three tensors back by value, once per parameter per step: boxing them
// would cost an allocation for nothing.
#[allow(clippy::result_large_err)]
pub fn try_host_step(hyper: SgdHyper, parts: Parts) -> Result<Done, Parts> {
    on_backend::<TchTensor>(hyper, parts, host_step_on)
}

/// The in-place ATen step on libtorch tensors (on a GPU; on the CPU only when asked for).
// `Parts` hands three tensors back by value, once per parameter per step: boxing them
// would cost an allocation for nothing.
#[allow(clippy::result_large_err)]
pub fn try_inplace_step(hyper: SgdHyper, parts: Parts) -> Result<Done, Parts> {
    on_backend::<TchTensor>(hyper, parts, inplace_step)
}

/// `g += p·wd`; `v = v·μ + g` in place (v = g on the first step); `p -= v·lr`. The same values
/// as Burn's `Sgd` (IEEE addition commutes), in four kernels and one temporary instead of about
/// seven kernels and four allocations. Needs buffers no other tensor shares.
fn inplace_step(
    hyper: SgdHyper,
    mut param: TchTensor,
    mut grad: TchTensor,
    velocity: Option<TchTensor>,
) -> PathResult<TchTensor> {
    let float = |t: &TchTensor| t.tensor.kind() == tch::Kind::Float;
    let usable = param.can_mut()
        && grad.can_mut()
        && float(&param)
        && float(&grad)
        && velocity.as_ref().is_none_or(|v| v.can_mut() && float(v));
    if !usable {
        return Err((param, grad, velocity));
    }
    if hyper.weight_decay != 0.0 {
        let decay = param
            .tensor
            .f_mul_scalar(f64::from(hyper.weight_decay))
            .expect("scaling a float tensor");
        let _ = grad
            .tensor
            .f_add_(&decay)
            .expect("in-place add of equal shapes");
    }
    if hyper.momentum == 0.0 {
        subtract_scaled(&mut param, &grad, hyper.lr);
        return Ok((param, None));
    }
    let velocity = match velocity {
        Some(mut velocity) => {
            let _ = velocity
                .tensor
                .f_mul_scalar_(f64::from(hyper.momentum))
                .expect("in-place scale");
            let _ = velocity
                .tensor
                .f_add_(&grad.tensor)
                .expect("in-place add of equal shapes");
            velocity
        }
        None => grad,
    };
    subtract_scaled(&mut param, &velocity, hyper.lr);
    Ok((param, Some(velocity)))
}

/// `param -= direction·lr`, in place.
fn subtract_scaled(param: &mut TchTensor, direction: &TchTensor, lr: f32) {
    let step = direction
        .tensor
        .f_mul_scalar(f64::from(lr))
        .expect("scaling a float tensor");
    let _ = param
        .tensor
        .f_sub_(&step)
        .expect("in-place subtract of equal shapes");
}
