// The gate gradients from per-(sample, channel) sums, in ATen ops (the CPU backward; the CUDA
// backward fuses the same formulas into its own kernels).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace wfkern {

// Alpha gradients from the per-(sample, channel) reductions sum(g * x) and sum(g), where x is what
// the forward saved: y, or its output (saved_is_output). scale = d out / d y per (b, c). ATen ops
// only, deterministic: the scatter by label is a matmul. mask_b is given with bias.
std::tuple<at::Tensor, at::Tensor> alpha_grads_from_sums(
    const at::Tensor& sum_gx, const at::Tensor& sum_g, const at::Tensor& scale, const c10::optional<at::Tensor>& mask_b,
    const at::Tensor& alpha_w, const c10::optional<at::Tensor>& alpha_b, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& post_scale, const c10::optional<at::Tensor>& post_shift, bool saved_is_output,
    const at::Tensor& labels);

}  // namespace wfkern
