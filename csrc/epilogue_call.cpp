// The checks of one epilogue call. Error texts match wfkern/ops/reference.py (EpilogueCall) word for word.
#include "epilogue_call.h"

namespace wfkern {

namespace {

int64_t normalize_channel_dim(const at::Tensor& y, int64_t channel_dim) {
  const int64_t dim = y.dim();
  const int64_t cd = channel_dim < 0 ? channel_dim + dim : channel_dim;
  TORCH_CHECK_VALUE(
      dim >= 2 && (cd == 1 || cd == dim - 1),
      "wfkern.mask_epilogue: channel_dim must be 1 or -1 for a tensor with at least 2 dims, got channel_dim=",
      channel_dim, " for a ", dim, "-d tensor");
  return cd;
}

// Cheap checks only: dtypes, shapes, devices.
void check_gates(const EpilogueCall& c) {
  const at::Tensor& y = c.y;
  TORCH_CHECK_TYPE(
      y.scalar_type() == at::kFloat || y.scalar_type() == at::kHalf || y.scalar_type() == at::kBFloat16 ||
          y.scalar_type() == at::kDouble,
      "wfkern.mask_epilogue: y must be float32, float16, bfloat16 or float64, got ", y.scalar_type());
  TORCH_CHECK_TYPE(
      c.alpha_w.scalar_type() == at::kFloat || c.alpha_w.scalar_type() == at::kDouble,
      "wfkern.mask_epilogue: alpha_w must be float32 or float64, got ", c.alpha_w.scalar_type());
  TORCH_CHECK_TYPE(
      c.labels.scalar_type() == at::kLong, "wfkern.mask_epilogue: labels must be int64, got ", c.labels.scalar_type());
  const int64_t channels = y.size(c.channel_dim);
  TORCH_CHECK_VALUE(
      c.alpha_w.dim() == 2 && c.alpha_w.size(1) == channels,
      "wfkern.mask_epilogue: alpha_w must have shape (num_classes, ", channels, "), got ", c.alpha_w.sizes());
  TORCH_CHECK_VALUE(
      (c.labels.dim() == 1 || c.labels.dim() == 2) && c.labels.size(0) == y.size(0),
      "wfkern.mask_epilogue: labels must have shape (", y.size(0), ",) or (", y.size(0), ", K), got ",
      c.labels.sizes());
  TORCH_CHECK_VALUE(
      c.alpha_b.has_value() == c.bias.has_value(),
      "wfkern.mask_epilogue: alpha_b and bias must be given together, got alpha_b ",
      c.alpha_b.has_value() ? "set" : "None", " and bias ", c.bias.has_value() ? "set" : "None");
  if (c.alpha_b.has_value()) {
    TORCH_CHECK_VALUE(
        c.alpha_b->sizes() == c.alpha_w.sizes() && c.alpha_b->scalar_type() == c.alpha_w.scalar_type(),
        "wfkern.mask_epilogue: alpha_b must match alpha_w in shape and dtype, got ", c.alpha_b->sizes(), " ",
        c.alpha_b->scalar_type());
    TORCH_CHECK_VALUE(
        c.bias->dim() == 1 && c.bias->size(0) == channels,
        "wfkern.mask_epilogue: bias must have shape (", channels, ",), got ", c.bias->sizes());
  }
  for (const at::Tensor* t : {&c.alpha_w, &c.labels}) {
    TORCH_CHECK_VALUE(
        t->device() == y.device(), "wfkern.mask_epilogue: all tensors must be on ", y.device(), ", got ",
        t->device());
  }
  if (c.alpha_b.has_value()) {
    TORCH_CHECK_VALUE(
        c.alpha_b->device() == y.device() && c.bias->device() == y.device(),
        "wfkern.mask_epilogue: all tensors must be on ", y.device());
  }
}

void check_post_affine(const EpilogueCall& c) {
  TORCH_CHECK_VALUE(
      c.post_scale.has_value() == c.post_shift.has_value(),
      "wfkern.mask_epilogue_: post_scale and post_shift must be given together");
  if (!c.post_scale.has_value()) return;
  const int64_t channels = c.y.size(c.channel_dim);
  for (const at::Tensor* t : {&*c.post_scale, &*c.post_shift}) {
    TORCH_CHECK_VALUE(
        t->dim() == 1 && t->size(0) == channels && t->device() == c.y.device() && t->is_floating_point(),
        "wfkern.mask_epilogue_: post_scale and post_shift must be floating (", channels, ",) tensors on ",
        c.y.device(), ", got ", t->sizes(), " ", t->scalar_type(), " on ", t->device());
  }
}

}  // namespace

void EpilogueCall::check() {
  channel_dim = normalize_channel_dim(y, channel_dim);
  check_gates(*this);
  check_post_affine(*this);
  sets = (labels.dim() == 1 ? labels.unsqueeze(1) : labels).contiguous();
  src = walkable(y, channel_dim, &geometry);
}

void check_grad_out(const at::Tensor& grad_out, const at::Tensor& saved) {
  TORCH_CHECK_VALUE(
      grad_out.sizes() == saved.sizes() && grad_out.scalar_type() == saved.scalar_type() &&
          grad_out.device() == saved.device(),
      "wfkern.mask_epilogue_backward: grad_out must match y in shape, dtype and device, got ", grad_out.sizes(), " ",
      grad_out.scalar_type(), " on ", grad_out.device());
}

}  // namespace wfkern
