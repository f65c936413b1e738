//! The fused SGD step on libtorch tensors: the host loop on the CPU; on a GPU, ATen's
//! multi-tensor (foreach) kernels over all the parameters of a step at once.
//!
//! Burn's optimizer hands over one parameter at a time and wants the new parameter back at
//! once. On a GPU the update is in place, so the new parameter *is* the old tensor: the step
//! is recorded here ([`try_deferred_step`]) and the tensors go back untouched, and
//! [`flush_deferred_steps`], called right after the optimizer's step
//! (`super::step_and_apply`), runs the recorded updates as one foreach call per set of
//! hyperparameters: six launches (fewer without weight decay or momentum) instead of six per
//! parameter, which at batch 1 on a GPU, where a step is launch-bound, were about half of an
//! STL step's operator calls (`scripts/op-census.sh`).
// burn-tch is deprecated upstream, but it is the only GPU path buildable here (README).
#![allow(deprecated)]

use std::cell::RefCell;

use burn::backend::libtorch::TchTensor;
use burn::backend::{BackendTensor, DispatchTensorKind};

use crate::aten_ops::{AtenError, foreach_sgd};

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

/// Records the step of one parameter for [`flush_deferred_steps`] (on a GPU; on the CPU only
/// when asked for) and hands back the tensors that the flush updates in place.
// `Parts` hands three tensors back by value, once per parameter per step: boxing them
// would cost an allocation for nothing.
#[allow(clippy::result_large_err)]
pub fn try_deferred_step(hyper: SgdHyper, parts: Parts) -> Result<Done, Parts> {
    on_backend::<TchTensor>(hyper, parts, defer_step)
}

/// One parameter's recorded update: handles on the same storage as the tensors handed back.
struct DeferredStep {
    hyper: SgdHyper,
    param: tch::Tensor,
    grad: tch::Tensor,
    velocity: Option<tch::Tensor>,
}

thread_local! {
    static DEFERRED: RefCell<Vec<DeferredStep>> = const { RefCell::new(Vec::new()) };
}

/// The new parameter is `param` itself and the velocity is `velocity` (or, on the first step,
/// the gradient's buffer), updated in place by the flush. Needs buffers no other tensor
/// shares: nobody else may see the update happen.
fn defer_step(
    hyper: SgdHyper,
    param: TchTensor,
    grad: TchTensor,
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
    DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        debug_assert!(
            deferred
                .iter()
                .all(|step| step.param.data_ptr() != param.tensor.data_ptr()),
            "a parameter stepped twice without flush_deferred_steps in between"
        );
        deferred.push(DeferredStep {
            hyper,
            param: param.tensor.shallow_clone(),
            grad: grad.tensor.shallow_clone(),
            velocity: velocity.as_ref().map(|v| v.tensor.shallow_clone()),
        });
    });
    if hyper.momentum == 0.0 {
        return Ok((param, None));
    }
    Ok((param, Some(velocity.unwrap_or(grad))))
}

/// Forgets this thread's recorded updates without running them.
pub fn discard_deferred_steps() {
    DEFERRED.with(|deferred| deferred.borrow_mut().clear());
}

/// Runs this thread's recorded parameter updates, one foreach call per set of
/// hyperparameters (and per first step or later one); returns how many parameters it updated.
pub fn flush_deferred_steps() -> Result<usize, AtenError> {
    let steps = DEFERRED.with(|deferred| std::mem::take(&mut *deferred.borrow_mut()));
    let mut groups: Vec<(SgdHyper, bool, Vec<&DeferredStep>)> = Vec::new();
    for step in &steps {
        let has_velocity = step.velocity.is_some();
        match groups
            .iter_mut()
            .find(|(hyper, velocity, _)| *hyper == step.hyper && *velocity == has_velocity)
        {
            Some((_, _, members)) => members.push(step),
            None => groups.push((step.hyper, has_velocity, vec![step])),
        }
    }
    for (hyper, has_velocity, members) in &groups {
        let params: Vec<&tch::Tensor> = members.iter().map(|step| &step.param).collect();
        let grads: Vec<&tch::Tensor> = members.iter().map(|step| &step.grad).collect();
        let velocities: Option<Vec<&tch::Tensor>> = has_velocity.then(|| {
            members
                .iter()
                .map(|step| step.velocity.as_ref().expect("grouped by having one"))
                .collect()
        });
        foreach_sgd(
            &params,
            &grads,
            velocities.as_deref(),
            f64::from(hyper.lr),
            f64::from(hyper.momentum),
            f64::from(hyper.weight_decay),
        )?;
    }
    Ok(steps.len())
}
