// Device-agnostic pieces of the backward pass, written with ATen ops (small [B, C] tensors only).
#include "checks.h"

namespace wfkern {

namespace {
// counts[b, l] = how often class l occurs in sample b's label set. Labels outside
// [0, num_classes) contribute nothing (callers have validated them; this keeps memory safe).
at::Tensor label_counts(const at::Tensor& labels, int64_t num_classes, at::ScalarType dtype) {
  const at::Tensor sets = labels.dim() == 1 ? labels.unsqueeze(1) : labels;
  const at::Tensor valid = sets.ge(0).logical_and(sets.lt(num_classes));
  const at::Tensor column = at::where(valid, sets + 1, at::zeros_like(sets));  // column 0 = ignored
  at::Tensor counts = at::zeros({sets.size(0), num_classes + 1}, sets.options().dtype(dtype));
  counts.scatter_add_(1, column, valid.to(dtype));
  return counts.narrow(1, 1, num_classes);
}

// d mask / d alpha[l] = mask * (1 - sigmoid(alpha[l])) for every occurrence of l in the set,
// so grad_alpha = (1 - sigmoid(alpha)) * counts^T @ (grad_mask * mask): a deterministic scatter.
at::Tensor scatter_to_alpha(
    const at::Tensor& counts, const at::Tensor& grad_mask, const at::Tensor& mask, const at::Tensor& alpha) {
  const at::Tensor table_alpha = alpha.to(mask.scalar_type());
  const at::Tensor grad = counts.t().matmul(grad_mask * mask) * (1 - at::sigmoid(table_alpha));
  return grad.to(alpha.scalar_type());
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> alpha_grads_from_sums(
    const at::Tensor& sum_gy, const at::Tensor& sum_g, const at::Tensor& mask_w,
    const c10::optional<at::Tensor>& mask_b, const at::Tensor& alpha_w, const c10::optional<at::Tensor>& alpha_b,
    const c10::optional<at::Tensor>& bias, const at::Tensor& labels) {
  const at::Tensor counts = label_counts(labels, alpha_w.size(0), mask_w.scalar_type());
  if (!bias.has_value()) {
    return {scatter_to_alpha(counts, sum_gy, mask_w, alpha_w), at::empty({0}, alpha_w.options())};
  }
  // out = (y - bias) * mask_w + bias * mask_b, with y including the bias.
  const at::Tensor table_bias = bias->to(mask_w.scalar_type()).unsqueeze(0);
  const at::Tensor bias_sum = table_bias * sum_g;
  return {
      scatter_to_alpha(counts, sum_gy - bias_sum, mask_w, alpha_w),
      scatter_to_alpha(counts, bias_sum, *mask_b, *alpha_b)};
}

}  // namespace wfkern
