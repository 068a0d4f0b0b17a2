// The gate gradients of the CPU backward, written with ATen ops (small (B, C) tensors only).
#include "gate_grads.h"

namespace wfkern {

namespace {
// counts[b, l] = 1 when class l is in sample b's set, a row of the (B, K) sets (each class once), else 0.
// Labels outside [0, num_classes) contribute nothing: the CPU kernel rejected them, the CUDA
// gate table poisoned their rows; this only keeps the scatter memory safe.
at::Tensor label_counts(const at::Tensor& sets, int64_t num_classes, at::ScalarType dtype) {
  at::Tensor valid = sets.ge(0).logical_and(sets.lt(num_classes));
  if (sets.size(1) > 1) {  // drop slots that repeat an earlier slot of the same set
    const at::Tensor same = sets.unsqueeze(2).eq(sets.unsqueeze(1));  // (B, K, K): slot k equals slot j
    const at::Tensor earlier = at::ones({sets.size(1), sets.size(1)}, same.options()).tril(-1);  // j < k
    valid = valid.logical_and(same.logical_and(earlier).any(2).logical_not());
  }
  const at::Tensor column = at::where(valid, sets + 1, at::zeros_like(sets));  // column 0 = ignored
  at::Tensor counts = at::zeros({sets.size(0), num_classes + 1}, sets.options().dtype(dtype));
  counts.scatter_add_(1, column, valid.to(dtype));
  return counts.narrow(1, 1, num_classes);
}

// d out / d alpha[l] = (y - bias) * mask_w * post_scale * (1 - sigmoid(alpha[l])) for every class l
// of the set, so grad_alpha = (1 - sigmoid(alpha)) * counts^T @ weighted: a deterministic scatter.
at::Tensor scatter_to_alpha(const at::Tensor& counts, const at::Tensor& weighted, const at::Tensor& alpha) {
  const at::Tensor grad = counts.t().matmul(weighted) * (1 - at::sigmoid(alpha.to(weighted.scalar_type())));
  return grad.to(alpha.scalar_type());
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> alpha_grads_from_sums(
    const at::Tensor& sum_gx, const at::Tensor& sum_g, const at::Tensor& scale, const OptTensor& mask_b,
    const EpilogueCall& call, bool saved_is_output) {
  // out = s * ((y - bias) * mask_w + bias * mask_b) + t; scale = s * mask_w; q = s * bias * mask_b.
  // The weight gates' term sum g * s * (y - bias) * mask_w is
  //   scale * (sum g*y - bias * sum g)   from y,  or   sum g*out - (t + q) * sum g   from the output;
  // the bias gates' term sum g * s * bias * mask_b is q * sum g.
  const at::ScalarType dtype = sum_gx.scalar_type();
  const at::Tensor counts = label_counts(call.sets, call.num_classes(), dtype);
  at::Tensor q, bias;
  if (call.bias.has_value()) {
    bias = call.bias->to(dtype).unsqueeze(0);
    q = bias * *mask_b;
    if (call.post_scale.has_value()) q = q * call.post_scale->to(dtype).unsqueeze(0);
  }
  at::Tensor weighted_w;
  if (saved_is_output) {
    at::Tensor offset = call.post_shift.has_value() ? call.post_shift->to(dtype).unsqueeze(0) : at::Tensor();
    if (q.defined()) offset = offset.defined() ? offset + q : q;
    weighted_w = offset.defined() ? sum_gx - offset * sum_g : sum_gx;
  } else {
    weighted_w = scale * (bias.defined() ? sum_gx - bias * sum_g : sum_gx);
  }
  if (!bias.defined()) {
    return {scatter_to_alpha(counts, weighted_w, call.alpha_w), at::empty({0}, call.alpha_w.options())};
  }
  return {scatter_to_alpha(counts, weighted_w, call.alpha_w), scatter_to_alpha(counts, q * sum_g, *call.alpha_b)};
}

}  // namespace wfkern
