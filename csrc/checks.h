// Argument checks shared by the CPU and CUDA implementations.
// Error texts match wfkern/ops/reference.py (check_epilogue_args) word for word.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

namespace wfkern {

inline int64_t normalize_channel_dim(const at::Tensor& y, int64_t channel_dim) {
  const int64_t dim = y.dim();
  const int64_t cd = channel_dim < 0 ? channel_dim + dim : channel_dim;
  TORCH_CHECK_VALUE(
      dim >= 2 && (cd == 1 || cd == dim - 1),
      "wfkern.mask_epilogue: channel_dim must be 1 or -1 for a tensor with at least 2 dims, got channel_dim=",
      channel_dim, " for a ", dim, "-d tensor");
  return cd;
}

// Cheap checks only: dtypes, shapes, devices. Label *values* are checked by the CPU kernel (on
// the host) and by the CUDA gate-table kernel (on the device, reported without a host sync).
inline void check_epilogue_args(
    const at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels,
    const c10::optional<at::Tensor>& alpha_b, const c10::optional<at::Tensor>& bias, int64_t cd) {
  TORCH_CHECK_TYPE(
      y.scalar_type() == at::kFloat || y.scalar_type() == at::kHalf || y.scalar_type() == at::kBFloat16 ||
          y.scalar_type() == at::kDouble,
      "wfkern.mask_epilogue: y must be float32, float16, bfloat16 or float64, got ", y.scalar_type());
  TORCH_CHECK_TYPE(
      alpha_w.scalar_type() == at::kFloat || alpha_w.scalar_type() == at::kDouble,
      "wfkern.mask_epilogue: alpha_w must be float32 or float64, got ", alpha_w.scalar_type());
  TORCH_CHECK_TYPE(
      labels.scalar_type() == at::kLong, "wfkern.mask_epilogue: labels must be int64, got ", labels.scalar_type());
  const int64_t channels = y.size(cd);
  TORCH_CHECK_VALUE(
      alpha_w.dim() == 2 && alpha_w.size(1) == channels,
      "wfkern.mask_epilogue: alpha_w must have shape (num_classes, ", channels, "), got ", alpha_w.sizes());
  TORCH_CHECK_VALUE(
      (labels.dim() == 1 || labels.dim() == 2) && labels.size(0) == y.size(0),
      "wfkern.mask_epilogue: labels must have shape (", y.size(0), ",) or (", y.size(0), ", K), got ",
      labels.sizes());
  TORCH_CHECK_VALUE(
      alpha_b.has_value() == bias.has_value(),
      "wfkern.mask_epilogue: alpha_b and bias must be given together, got alpha_b ",
      alpha_b.has_value() ? "set" : "None", " and bias ", bias.has_value() ? "set" : "None");
  if (alpha_b.has_value()) {
    TORCH_CHECK_VALUE(
        alpha_b->sizes() == alpha_w.sizes() && alpha_b->scalar_type() == alpha_w.scalar_type(),
        "wfkern.mask_epilogue: alpha_b must match alpha_w in shape and dtype, got ", alpha_b->sizes(), " ",
        alpha_b->scalar_type());
    TORCH_CHECK_VALUE(
        bias->dim() == 1 && bias->size(0) == channels,
        "wfkern.mask_epilogue: bias must have shape (", channels, ",), got ", bias->sizes());
  }
  for (const at::Tensor* t : {&alpha_w, &labels}) {
    TORCH_CHECK_VALUE(
        t->device() == y.device(), "wfkern.mask_epilogue: all tensors must be on ", y.device(), ", got ",
        t->device());
  }
  if (alpha_b.has_value()) {
    TORCH_CHECK_VALUE(
        alpha_b->device() == y.device() && bias->device() == y.device(),
        "wfkern.mask_epilogue: all tensors must be on ", y.device());
  }
}

inline void check_grad_out(const at::Tensor& grad_out, const at::Tensor& y) {
  TORCH_CHECK_VALUE(
      grad_out.sizes() == y.sizes() && grad_out.scalar_type() == y.scalar_type() && grad_out.device() == y.device(),
      "wfkern.mask_epilogue_backward: grad_out must match y in shape, dtype and device, got ", grad_out.sizes(), " ",
      grad_out.scalar_type(), " on ", grad_out.device());
}

inline void check_post_affine(
    const at::Tensor& y, int64_t cd, const c10::optional<at::Tensor>& post_scale,
    const c10::optional<at::Tensor>& post_shift) {
  TORCH_CHECK_VALUE(
      post_scale.has_value() == post_shift.has_value(),
      "wfkern.mask_epilogue_: post_scale and post_shift must be given together");
  if (post_scale.has_value()) {
    for (const at::Tensor* t : {&*post_scale, &*post_shift}) {
      TORCH_CHECK_VALUE(
          t->dim() == 1 && t->size(0) == y.size(cd) && t->device() == y.device() && t->is_floating_point(),
          "wfkern.mask_epilogue_: post_scale and post_shift must be floating (", y.size(cd), ",) tensors on ",
          y.device(), ", got ", t->sizes(), " ", t->scalar_type(), " on ", t->device());
    }
  }
}

}  // namespace wfkern
