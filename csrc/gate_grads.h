// The gate gradients from per-(sample, channel) sums, in ATen ops (the CPU backward; the CUDA
// backward fuses the same formulas into its own kernels).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

#include "epilogue_call.h"

namespace wfkern {

// Alpha gradients of a checked call from the per-(sample, channel) reductions sum(g * x) and sum(g),
// where x is what the forward saved: y, or its output (saved_is_output). scale = d out / d y per
// (b, c). ATen ops only, deterministic: the scatter by label is a matmul. mask_b is given with the bias.
std::tuple<at::Tensor, at::Tensor> alpha_grads_from_sums(
    const at::Tensor& sum_gx, const at::Tensor& sum_g, const at::Tensor& scale, const OptTensor& mask_b,
    const EpilogueCall& call, bool saved_is_output);

}  // namespace wfkern
