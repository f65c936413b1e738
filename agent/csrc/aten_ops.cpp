// ATen operators that tch 0.22 does not bind, called by the `tch` build
// (agent/src/model/aten_ops.rs). Tensors cross as tch's handles, `at::Tensor*`; a result is
// a new handle that Rust takes ownership of. A C++ exception becomes a message, copied into
// memory the caller frees with `ndhtl_aten_free_error`; null means success.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/_log_softmax.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/nll_loss_forward.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

namespace {

char* copy_message(const char* message) {
  char* copy = static_cast<char*>(std::malloc(std::strlen(message) + 1));
  if (copy == nullptr) {
    // Null would read as success: with no host memory left to report the error, stop.
    std::abort();
  }
  std::strcpy(copy, message);
  return copy;
}

}  // namespace

extern "C" {

void ndhtl_aten_free_error(char* error) { std::free(error); }

// ATen's convolution backward (what PyTorch's ConvolutionBackward0 calls: oneDNN or the slow
// path on the CPU, cuDNN on a GPU) for a 2-d, non-transposed convolution with a bias of
// `weight`'s output channels. Writes the gradients asked for by `output_mask` (input,
// weight, bias) into `gradients`, and null where not asked.
char* ndhtl_aten_convolution_backward(const at::Tensor* grad_output, const at::Tensor* input,
                                      const at::Tensor* weight, const int64_t* stride,
                                      const int64_t* padding, const int64_t* dilation,
                                      int64_t groups, const bool* output_mask,
                                      at::Tensor** gradients) {
  try {
    const int64_t bias_size = weight->size(0);
    const int64_t no_output_padding[2] = {0, 0};
    auto [grad_input, grad_weight, grad_bias] = at::convolution_backward(
        *grad_output, *input, *weight, at::IntArrayRef(&bias_size, 1),
        at::IntArrayRef(stride, 2), at::IntArrayRef(padding, 2), at::IntArrayRef(dilation, 2),
        /*transposed=*/false, at::IntArrayRef(no_output_padding, 2), groups,
        std::array<bool, 3>{output_mask[0], output_mask[1], output_mask[2]});
    at::Tensor* results[3] = {nullptr, nullptr, nullptr};
    const at::Tensor* computed[3] = {&grad_input, &grad_weight, &grad_bias};
    for (int index = 0; index < 3; ++index) {
      if (output_mask[index]) {
        results[index] = new at::Tensor(*computed[index]);
      }
    }
    for (int index = 0; index < 3; ++index) {
      gradients[index] = results[index];
    }
    return nullptr;
  } catch (const std::exception& error) {
    return copy_message(error.what());
  }
}

// Cross-entropy of `logits` (B×C) against class indices `target` (B, int64), as PyTorch's
// `cross_entropy` computes it: `_log_softmax` along the classes, then `nll_loss_forward` with
// `reduction` (ATen's code: 0 none, 1 mean, 2 sum), no class weights and `ignore_index` (the
// backward must be given the same). Writes the loss, the log-probabilities and the total weight
// (what `nll_loss_backward` takes) into `outputs`.
char* ndhtl_aten_cross_entropy_forward(const at::Tensor* logits, const at::Tensor* target,
                                       int64_t reduction, int64_t ignore_index,
                                       at::Tensor** outputs) {
  try {
    at::Tensor log_probs = at::_log_softmax(*logits, 1, /*half_to_float=*/false);
    auto [loss, total_weight] =
        at::nll_loss_forward(log_probs, *target, /*weight=*/{}, reduction, ignore_index);
    outputs[0] = new at::Tensor(std::move(loss));
    outputs[1] = new at::Tensor(std::move(log_probs));
    outputs[2] = new at::Tensor(std::move(total_weight));
    return nullptr;
  } catch (const std::exception& error) {
    return copy_message(error.what());
  }
}

// One SGD step over `count` parameters with the same hyperparameters, in place, with ATen's
// multi-tensor (foreach) kernels: on a GPU one launch per operation and chunk of tensors
// instead of one per operation and tensor. The operations and their order are those of the
// per-parameter path (agent/src/train/optimizer/torch.rs), so the values are the same bit for
// bit: g += p·wd; v = v·μ + g (v is g itself when `velocities` is null: the first step);
// p -= v·lr (p -= g·lr without momentum, when `velocities` is null and μ = 0).
char* ndhtl_aten_foreach_sgd(at::Tensor* const* params, at::Tensor* const* grads,
                             at::Tensor* const* velocities, int64_t count, double lr,
                             double momentum, double weight_decay) {
  try {
    std::vector<at::Tensor> param_list;
    std::vector<at::Tensor> grad_list;
    std::vector<at::Tensor> velocity_list;
    for (int64_t index = 0; index < count; ++index) {
      param_list.push_back(*params[index]);
      grad_list.push_back(*grads[index]);
      if (velocities != nullptr) {
        velocity_list.push_back(*velocities[index]);
      }
    }
    if (weight_decay != 0.0) {
      const auto decays = at::_foreach_mul(param_list, weight_decay);
      at::_foreach_add_(grad_list, decays);
    }
    std::vector<at::Tensor>* direction = &grad_list;
    if (momentum != 0.0 && velocities != nullptr) {
      at::_foreach_mul_(velocity_list, momentum);
      at::_foreach_add_(velocity_list, grad_list);
      direction = &velocity_list;
    }
    const auto steps = at::_foreach_mul(*direction, lr);
    at::_foreach_sub_(param_list, steps);
    return nullptr;
  } catch (const std::exception& error) {
    return copy_message(error.what());
  }
}

}  // extern "C"
