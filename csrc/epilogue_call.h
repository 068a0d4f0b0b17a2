// One epilogue call: the arguments of mask_epilogue, mask_epilogue_ and mask_epilogue_backward,
// held, checked and normalised once where an implementation is entered from the dispatcher. Every
// CPU and CUDA implementation and the autograd kernel take an EpilogueCall; the op argument lists
// (registration.cpp) are spelled out here only, in the dispatcher entries and the op types below.
// Python's counterpart, with the same checks and texts: wfkern/ops/reference.py (EpilogueCall).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "layout.h"

namespace wfkern {

using OptTensor = c10::optional<at::Tensor>;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // (grad_y, grad_alpha_w, grad_alpha_b)

struct EpilogueCall {
  at::Tensor y;                      // the activation: the op's y, or what the forward saved (backward)
  at::Tensor alpha_w;                // (Nc, C) weight-gate logits
  at::Tensor labels;                 // (B,) or (B, K) int64 classes to forget, -1 = none
  OptTensor alpha_b, bias;           // (Nc, C) bias-gate logits and the (C,) bias, given together
  int64_t channel_dim = 1;           // as given; after check(): 1 or y.dim() - 1
  OptTensor post_scale, post_shift;  // (C,) affine applied last (a folded BatchNorm), given together
  // Set by check():
  at::Tensor sets;    // labels as a contiguous (B, K) table
  at::Tensor src;     // y when its memory layout can be walked as it is, else a contiguous copy
  Geometry geometry;  // how src is walked

  // Checks dtypes, shapes and devices (label *values* are each backend's business: the CPU reads
  // them on the host, the CUDA gate table on the device, without a host sync), normalises
  // channel_dim and builds the label table and the walk. Kernels start from a checked call.
  void check();

  int64_t num_classes() const { return alpha_w.size(0); }
  // Math type of the per-sample tables: float64 for float64 activations (gradcheck), else float32.
  at::ScalarType table_dtype() const { return wfkern::table_dtype(y); }
  // A result computed in src's layout, with y's strides (what empty_like(y) has).
  at::Tensor like_y(const at::Tensor& result) const { return like_input(result, src, y); }
  // After an in-place write into src: y holds the result (a no-op unless src is a copy).
  void store_src_in_y() const {
    if (!src.is_same(y)) y.copy_(src);
  }
};

// grad_out must match what the forward saved in shape, dtype and device.
void check_grad_out(const at::Tensor& grad_out, const at::Tensor& saved);

// ---- dispatcher entries ---------------------------------------------------------------------------
// Each implementation registers these with its body, e.g. m.impl("mask_epilogue", &forward_entry<body>).
// kCheck = false hands the call on as given (the autograd kernel: the kernel it redispatches to checks).
template <at::Tensor (*Body)(const EpilogueCall&, bool save_output), bool kCheck = true>
at::Tensor forward_entry(
    const at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels, const OptTensor& alpha_b,
    const OptTensor& bias, int64_t channel_dim, const OptTensor& post_scale, const OptTensor& post_shift,
    bool save_output) {
  EpilogueCall call{y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift};
  if constexpr (kCheck) call.check();
  return Body(call, save_output);
}

// The in-place op: the body writes the result into call.src, then call.store_src_in_y().
template <void (*Body)(const EpilogueCall&)>
void inplace_entry(
    at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels, const OptTensor& alpha_b,
    const OptTensor& bias, int64_t channel_dim, const OptTensor& post_scale, const OptTensor& post_shift) {
  EpilogueCall call{y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift};
  call.check();
  Body(call);
}

// The backward: the body gets grad_out with the strides of call.src (what it walks).
template <Grads (*Body)(const at::Tensor& grad, const EpilogueCall& saved, bool saved_is_output, bool compute_grad_y)>
Grads backward_entry(
    const at::Tensor& grad_out, const at::Tensor& saved, const at::Tensor& alpha_w, const at::Tensor& labels,
    const OptTensor& alpha_b, const OptTensor& bias, int64_t channel_dim, const OptTensor& post_scale,
    const OptTensor& post_shift, bool saved_is_output, bool compute_grad_y) {
  check_grad_out(grad_out, saved);
  EpilogueCall call{saved, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift};
  call.check();
  return Body(with_strides_of(grad_out, call.src), call, saved_is_output, compute_grad_y);
}

// The ops as C++ function types, for calls through the dispatcher (the autograd kernel's).
using ForwardOp = at::Tensor(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&, int64_t,
    const OptTensor&, const OptTensor&, bool);
using BackwardOp = Grads(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
    int64_t, const OptTensor&, const OptTensor&, bool, bool);

}  // namespace wfkern
