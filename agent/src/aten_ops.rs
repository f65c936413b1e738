//! ATen operators that tch 0.22 does not bind, compiled from `agent/csrc/aten_ops.cpp` by the
//! `tch` build: safe wrappers over its C functions.

use std::ffi::{CStr, c_char};

type AtenTensor = tch::Tensor;
/// tch's tensor handle on the C side: a pointer to an `at::Tensor`.
type RawTensor = *mut std::ffi::c_void;

unsafe extern "C" {
    fn ndhtl_aten_free_error(error: *mut c_char);
    fn ndhtl_aten_convolution_backward(
        grad_output: *const std::ffi::c_void,
        input: *const std::ffi::c_void,
        weight: *const std::ffi::c_void,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        groups: i64,
        output_mask: *const bool,
        gradients: *mut RawTensor,
    ) -> *mut c_char;
    fn ndhtl_aten_cross_entropy_forward(
        logits: *const std::ffi::c_void,
        target: *const std::ffi::c_void,
        reduction: i64,
        ignore_index: i64,
        outputs: *mut RawTensor,
    ) -> *mut c_char;
    fn ndhtl_aten_foreach_sgd(
        params: *const *const std::ffi::c_void,
        grads: *const *const std::ffi::c_void,
        velocities: *const *const std::ffi::c_void,
        count: i64,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    ) -> *mut c_char;
}

/// An exception libtorch threw (an out-of-memory on a GPU, a shape it refused), with its
/// message.
#[derive(Debug, thiserror::Error)]
#[error("libtorch: {message}")]
pub struct AtenError {
    pub message: String,
}

/// Takes the C side's error message, if any, and frees it.
fn take_error(error: *mut c_char) -> Result<(), AtenError> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a NUL-terminated string the C side allocated for us, freed right after.
    let message = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: allocated by the C side's malloc, freed once, by its free.
    unsafe { ndhtl_aten_free_error(error) };
    Err(AtenError { message })
}

fn raw(tensor: &AtenTensor) -> *const std::ffi::c_void {
    tensor.as_ptr().cast()
}

/// The geometry of a 2-d convolution, as ATen takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub stride: [i64; 2],
    pub padding: [i64; 2],
    pub dilation: [i64; 2],
    pub groups: i64,
}

/// ATen's `convolution_backward` for a non-transposed 2-d convolution with a bias: the
/// gradients of the input, weight and bias where `wanted`, for `grad_output`. The kernels
/// PyTorch's `ConvolutionBackward0` runs (oneDNN or ATen's own on the CPU, cuDNN on a GPU).
pub fn convolution_backward(
    grad_output: &AtenTensor,
    input: &AtenTensor,
    weight: &AtenTensor,
    geometry: &Conv2dGeometry,
    wanted: [bool; 3],
) -> Result<[Option<AtenTensor>; 3], AtenError> {
    let mut gradients: [RawTensor; 3] = [std::ptr::null_mut(); 3];
    // SAFETY: live tch tensors, arrays of the lengths the C side reads (2, 2, 2, 3) and
    // writes (3); it writes a new `at::Tensor*` or null into each slot and throws nothing.
    let error = unsafe {
        ndhtl_aten_convolution_backward(
            raw(grad_output),
            raw(input),
            raw(weight),
            geometry.stride.as_ptr(),
            geometry.padding.as_ptr(),
            geometry.dilation.as_ptr(),
            geometry.groups,
            wanted.as_ptr(),
            gradients.as_mut_ptr(),
        )
    };
    take_error(error)?;
    Ok(gradients.map(|gradient| {
        // SAFETY: a tensor the C side allocated for us alone; tch frees it on drop.
        (!gradient.is_null()).then(|| unsafe { tch::Tensor::from_ptr(gradient.cast()) })
    }))
}

/// Cross-entropy as PyTorch's `cross_entropy` computes it, ATen's `_log_softmax` along the
/// classes then `nll_loss_forward` with `reduction` (ATen's code) and no class weights:
/// `[loss, log_probs, total_weight]`, the last two what `nll_loss_backward` takes, with the same
/// `ignore_index`. `target` holds `int64` class indices, one per row of `logits`.
pub fn cross_entropy_forward(
    logits: &AtenTensor,
    target: &AtenTensor,
    reduction: i64,
    ignore_index: i64,
) -> Result<[AtenTensor; 3], AtenError> {
    let mut outputs: [RawTensor; 3] = [std::ptr::null_mut(); 3];
    // SAFETY: live tch tensors and an array of the 3 slots the C side writes, each a new
    // `at::Tensor*` on success (none on failure); it throws nothing.
    let error = unsafe {
        ndhtl_aten_cross_entropy_forward(
            raw(logits),
            raw(target),
            reduction,
            ignore_index,
            outputs.as_mut_ptr(),
        )
    };
    take_error(error)?;
    debug_assert!(
        outputs.iter().all(|output| !output.is_null()),
        "3 outputs on success"
    );
    // SAFETY: tensors the C side allocated for us alone; tch frees them on drop.
    Ok(outputs.map(|output| unsafe { tch::Tensor::from_ptr(output.cast()) }))
}

/// One SGD step, in place, over parameters that share their hyperparameters, with ATen's
/// multi-tensor kernels (one launch per operation and chunk of tensors on a GPU):
/// `g += p·wd; v = v·μ + g; p -= v·lr`, the operations of the per-parameter path in the same
/// order, so the same values bit for bit. Without `velocities` (the first step, or μ = 0) the
/// gradient is the direction: `p -= g·lr`. All tensors are updated in place; the slices have
/// one entry per parameter.
pub fn foreach_sgd(
    params: &[&AtenTensor],
    grads: &[&AtenTensor],
    velocities: Option<&[&AtenTensor]>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
) -> Result<(), AtenError> {
    assert_eq!(params.len(), grads.len(), "a gradient per parameter");
    let pointers = |tensors: &[&AtenTensor]| tensors.iter().map(|t| raw(t)).collect::<Vec<_>>();
    let param_pointers = pointers(params);
    let grad_pointers = pointers(grads);
    let velocity_pointers = velocities.map(|velocities| {
        assert_eq!(velocities.len(), params.len(), "a velocity per parameter");
        pointers(velocities)
    });
    // SAFETY: live tch tensors, `count` pointers in each array (or a null array of
    // velocities); the C side updates them in place and throws nothing.
    let error = unsafe {
        ndhtl_aten_foreach_sgd(
            param_pointers.as_ptr(),
            grad_pointers.as_ptr(),
            velocity_pointers
                .as_ref()
                .map_or(std::ptr::null(), |pointers| pointers.as_ptr()),
            params.len() as i64,
            lr,
            momentum,
            weight_decay,
        )
    };
    take_error(error)
}
