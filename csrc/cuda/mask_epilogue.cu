// CUDA implementation of mask_epilogue and its backward.
// Forward: a tiny gate-table kernel ((B, C) masks), then one vectorised pass over y.
// Backward: one pass over grad_out and y writing grad_y and the per-(sample, channel) sums
// sum(g*y), sum(g) (deterministic: fixed reduction order); the scatter to alphas is a matmul.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>

#include "../checks.h"

namespace wfkern {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerTile = 32;
constexpr int kRowsBlock = 128;

template <typename acc_t>
__device__ __forceinline__ acc_t sigmoid_of(acc_t x) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return 1.f / (1.f + expf(-x));
  } else {
    return 1.0 / (1.0 + ::exp(-x));
  }
}

template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Pack {
  scalar_t v[VEC];
};

// One thread per (b, c). Writes mask_w and either the forward shift bias*(mask_b - mask_w) or mask_b.
// Forward tables may fold a per-channel affine: mask_w *= post_scale, shift = shift * post_scale + post_shift.
// Labels >= num_classes (never passed by the validating wrapper) poison the row with NaN instead
// of reading out of bounds.
template <typename acc_t>
__global__ void gate_table_kernel(
    const acc_t* __restrict__ alpha_w, const acc_t* __restrict__ alpha_b, const acc_t* __restrict__ bias,
    const acc_t* __restrict__ post_scale, const acc_t* __restrict__ post_shift, const int64_t* __restrict__ labels,
    int64_t batch, int64_t set_size, int64_t channels, int64_t num_classes, bool write_shift,
    acc_t* __restrict__ mask_w, acc_t* __restrict__ second) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= batch * channels) return;
  const int64_t b = i / channels, c = i % channels;
  acc_t mw = 1, mb = 1;
  for (int64_t k = 0; k < set_size; ++k) {
    const int64_t l = labels[b * set_size + k];
    if (l < 0) continue;
    if (l >= num_classes) {
      mw = mb = acc_t(NAN);
      continue;
    }
    mw *= sigmoid_of(alpha_w[l * channels + c]);
    if (alpha_b != nullptr) mb *= sigmoid_of(alpha_b[l * channels + c]);
  }
  if (!write_shift) {
    mask_w[i] = mw;
    if (second != nullptr) second[i] = mb;
    return;
  }
  acc_t shift = alpha_b != nullptr ? bias[c] * (mb - mw) : acc_t(0);
  if (post_scale != nullptr) {
    mw *= post_scale[c];
    shift = shift * post_scale[c] + post_shift[c];
  }
  mask_w[i] = mw;
  if (second != nullptr) second[i] = shift;
}

// out = y * scale + shift. Planes: VEC elements share one (b, c) plane (S % VEC == 0).
// Rows: VEC consecutive channels of one row (C % VEC == 0).
template <typename scalar_t, typename acc_t, int VEC, bool ROWS, bool SHIFT>
__global__ void forward_kernel(
    const scalar_t* y, scalar_t* out, const acc_t* __restrict__ scale,
    const acc_t* __restrict__ shift, int64_t n_packs, int64_t channels, int64_t spatial) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < n_packs; v += stride) {
    const int64_t i0 = v * VEC;
    const Pack<scalar_t, VEC> in = *reinterpret_cast<const Pack<scalar_t, VEC>*>(y + i0);
    Pack<scalar_t, VEC> res;
    if constexpr (ROWS) {
      const int64_t table0 = (i0 / (spatial * channels)) * channels + i0 % channels;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const acc_t sh = SHIFT ? shift[table0 + j] : acc_t(0);
        res.v[j] = static_cast<scalar_t>(static_cast<acc_t>(in.v[j]) * scale[table0 + j] + sh);
      }
    } else {
      const int64_t plane = i0 / spatial;
      const acc_t a = scale[plane];
      const acc_t sh = SHIFT ? shift[plane] : acc_t(0);
#pragma unroll
      for (int j = 0; j < VEC; ++j) res.v[j] = static_cast<scalar_t>(static_cast<acc_t>(in.v[j]) * a + sh);
    }
    *reinterpret_cast<Pack<scalar_t, VEC>*>(out + i0) = res;
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

// Planes layout: one warp per (b, c) plane of S contiguous elements.
template <typename scalar_t, typename acc_t, int VEC, bool GRAD_Y>
__global__ void backward_planes_kernel(
    const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y, scalar_t* __restrict__ grad_y,
    const acc_t* __restrict__ scale, acc_t* __restrict__ sum_gy, acc_t* __restrict__ sum_g, int64_t planes,
    int64_t spatial) {
  const int lane = threadIdx.x & 31;
  const int64_t plane = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  if (plane >= planes) return;  // uniform per warp
  const acc_t a = scale[plane];
  const int64_t base = plane * spatial;
  acc_t acc_gy = 0, acc_g = 0;
  for (int64_t s = static_cast<int64_t>(lane) * VEC; s < spatial; s += 32 * VEC) {
    const Pack<scalar_t, VEC> gp = *reinterpret_cast<const Pack<scalar_t, VEC>*>(grad + base + s);
    const Pack<scalar_t, VEC> yp = *reinterpret_cast<const Pack<scalar_t, VEC>*>(y + base + s);
    Pack<scalar_t, VEC> gyp;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t gv = static_cast<acc_t>(gp.v[j]);
      acc_gy += gv * static_cast<acc_t>(yp.v[j]);
      acc_g += gv;
      if constexpr (GRAD_Y) gyp.v[j] = static_cast<scalar_t>(gv * a);
    }
    if constexpr (GRAD_Y) *reinterpret_cast<Pack<scalar_t, VEC>*>(grad_y + base + s) = gyp;
  }
  acc_gy = warp_sum(acc_gy);
  acc_g = warp_sum(acc_g);
  if (lane == 0) {
    sum_gy[plane] = acc_gy;
    sum_g[plane] = acc_g;
  }
}

// Rows layout (B, S, C): a thread per channel walks a tile of rows; partial sums per tile.
template <typename scalar_t, typename acc_t, bool GRAD_Y>
__global__ void backward_rows_kernel(
    const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y, scalar_t* __restrict__ grad_y,
    const acc_t* __restrict__ scale, acc_t* __restrict__ part_gy, acc_t* __restrict__ part_g, int64_t spatial,
    int64_t channels, int64_t tiles) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t t = blockIdx.y, b = blockIdx.z;
  if (c >= channels) return;
  const acc_t a = scale[b * channels + c];
  acc_t acc_gy = 0, acc_g = 0;
  const int64_t s_end = min(spatial, (t + 1) * kRowsPerTile);
  for (int64_t s = t * kRowsPerTile; s < s_end; ++s) {
    const int64_t i = (b * spatial + s) * channels + c;
    const acc_t gv = static_cast<acc_t>(grad[i]);
    acc_gy += gv * static_cast<acc_t>(y[i]);
    acc_g += gv;
    if constexpr (GRAD_Y) grad_y[i] = static_cast<scalar_t>(gv * a);
  }
  part_gy[(b * tiles + t) * channels + c] = acc_gy;
  part_g[(b * tiles + t) * channels + c] = acc_g;
}

int64_t blocks_for(int64_t work, int threads) { return std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, 1 << 30)); }

template <typename scalar_t>
int pack_width(const Geometry& g, std::initializer_list<const void*> ptrs) {
  int vec = std::max<int>(1, 16 / static_cast<int>(sizeof(scalar_t)));
  const int64_t inner = g.layout == Layout::Rows ? g.channels : g.spatial;
  auto aligned = [&](int v) {
    for (const void* p : ptrs) {
      if (p != nullptr && reinterpret_cast<uintptr_t>(p) % (v * sizeof(scalar_t)) != 0) return false;
    }
    return inner % v == 0;
  };
  while (vec > 1 && !aligned(vec)) vec /= 2;
  return vec;
}

struct CudaTables {
  at::Tensor mask_w, second;  // second: forward shift, or backward mask_b; undefined without a bias
};

CudaTables gate_tables_cuda(
    const at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels, const c10::optional<at::Tensor>& alpha_b,
    const c10::optional<at::Tensor>& bias, bool write_shift, const c10::optional<at::Tensor>& post_scale = c10::nullopt,
    const c10::optional<at::Tensor>& post_shift = c10::nullopt) {
  const at::ScalarType dtype = table_dtype(y);
  const at::Tensor sets = (labels.dim() == 1 ? labels.unsqueeze(1) : labels).contiguous();
  const at::Tensor aw = alpha_w.to(dtype).contiguous();
  at::Tensor ab, bs, ps, pt;
  CudaTables t;
  t.mask_w = at::empty({y.size(0), alpha_w.size(1)}, aw.options());
  if (alpha_b.has_value()) {
    ab = alpha_b->to(dtype).contiguous();
    bs = bias->to(dtype).contiguous();
  }
  if (post_scale.has_value()) {
    ps = post_scale->to(dtype).contiguous();
    pt = post_shift->to(dtype).contiguous();
  }
  if (ab.defined() || ps.defined()) t.second = at::empty_like(t.mask_w);
  const int64_t n = t.mask_w.numel();
  if (n == 0) return t;
  AT_DISPATCH_FLOATING_TYPES(dtype, "wfkern_gate_table_cuda", [&] {
    gate_table_kernel<scalar_t><<<blocks_for(n, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        aw.data_ptr<scalar_t>(), ab.defined() ? ab.data_ptr<scalar_t>() : nullptr,
        bs.defined() ? bs.data_ptr<scalar_t>() : nullptr, ps.defined() ? ps.data_ptr<scalar_t>() : nullptr,
        pt.defined() ? pt.data_ptr<scalar_t>() : nullptr, sets.data_ptr<int64_t>(), sets.size(0), sets.size(1),
        alpha_w.size(1), alpha_w.size(0), write_shift, t.mask_w.data_ptr<scalar_t>(),
        t.second.defined() ? t.second.data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return t;
}

template <typename scalar_t, typename acc_t, int VEC, bool ROWS>
void launch_forward(const Geometry& g, const scalar_t* y, scalar_t* out, const acc_t* scale, const acc_t* shift) {
  const int64_t n_packs = g.batch * g.channels * g.spatial / VEC;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (shift != nullptr) {
    forward_kernel<scalar_t, acc_t, VEC, ROWS, true>
        <<<blocks_for(n_packs, kThreads), kThreads, 0, stream>>>(y, out, scale, shift, n_packs, g.channels, g.spatial);
  } else {
    forward_kernel<scalar_t, acc_t, VEC, ROWS, false>
        <<<blocks_for(n_packs, kThreads), kThreads, 0, stream>>>(y, out, scale, shift, n_packs, g.channels, g.spatial);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t, bool ROWS>
void forward_any_width(const Geometry& g, const scalar_t* y, scalar_t* out, const acc_t* scale, const acc_t* shift) {
  switch (pack_width<scalar_t>(g, {y, out})) {
    case 8: return launch_forward<scalar_t, acc_t, 8, ROWS>(g, y, out, scale, shift);
    case 4: return launch_forward<scalar_t, acc_t, 4, ROWS>(g, y, out, scale, shift);
    case 2: return launch_forward<scalar_t, acc_t, 2, ROWS>(g, y, out, scale, shift);
    default: return launch_forward<scalar_t, acc_t, 1, ROWS>(g, y, out, scale, shift);
  }
}

// Writes the epilogue of src into out (out may be src itself); both walkable with equal strides.
void epilogue_into(const at::Tensor& src, at::Tensor& out, const Geometry& g, const CudaTables& t) {
  if (src.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "wfkern_mask_epilogue_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* shift = t.second.defined() ? t.second.data_ptr<acc_t>() : nullptr;
    const scalar_t* in = src.data_ptr<scalar_t>();
    scalar_t* res = out.data_ptr<scalar_t>();
    if (g.layout == Layout::Rows) {
      forward_any_width<scalar_t, acc_t, true>(g, in, res, t.mask_w.data_ptr<acc_t>(), shift);
    } else {
      forward_any_width<scalar_t, acc_t, false>(g, in, res, t.mask_w.data_ptr<acc_t>(), shift);
    }
  });
}

at::Tensor mask_epilogue_cuda(
    const at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels, const c10::optional<at::Tensor>& alpha_b,
    const c10::optional<at::Tensor>& bias, int64_t channel_dim) {
  const int64_t cd = normalize_channel_dim(y, channel_dim);
  check_epilogue_args(y, alpha_w, labels, alpha_b, bias, cd);
  const c10::cuda::CUDAGuard guard(y.device());
  const CudaTables t = gate_tables_cuda(y, alpha_w, labels, alpha_b, bias, /*write_shift=*/true);
  Geometry g;
  const at::Tensor src = walkable(y, cd, &g);
  at::Tensor out = at::empty_like(src);
  epilogue_into(src, out, g, t);
  return like_input(out, src, y);
}

void mask_epilogue_inplace_cuda(
    at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels, const c10::optional<at::Tensor>& alpha_b,
    const c10::optional<at::Tensor>& bias, int64_t channel_dim, const c10::optional<at::Tensor>& post_scale,
    const c10::optional<at::Tensor>& post_shift) {
  const int64_t cd = normalize_channel_dim(y, channel_dim);
  check_epilogue_args(y, alpha_w, labels, alpha_b, bias, cd);
  check_post_affine(y, cd, post_scale, post_shift);
  const c10::cuda::CUDAGuard guard(y.device());
  const CudaTables t = gate_tables_cuda(y, alpha_w, labels, alpha_b, bias, /*write_shift=*/true, post_scale, post_shift);
  Geometry g;
  at::Tensor src = walkable(y, cd, &g);
  epilogue_into(src, src, g, t);
  if (!src.is_same(y)) y.copy_(src);
}

template <typename scalar_t, typename acc_t, int VEC>
void launch_backward_planes(
    const Geometry& g, const scalar_t* grad, const scalar_t* y, scalar_t* grad_y, const acc_t* scale, acc_t* sum_gy,
    acc_t* sum_g) {
  const int64_t planes = g.batch * g.channels;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t blocks = blocks_for(planes * 32, kThreads);
  if (grad_y != nullptr) {
    backward_planes_kernel<scalar_t, acc_t, VEC, true>
        <<<blocks, kThreads, 0, stream>>>(grad, y, grad_y, scale, sum_gy, sum_g, planes, g.spatial);
  } else {
    backward_planes_kernel<scalar_t, acc_t, VEC, false>
        <<<blocks, kThreads, 0, stream>>>(grad, y, grad_y, scale, sum_gy, sum_g, planes, g.spatial);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t>
void backward_sums(
    const Geometry& g, const scalar_t* grad, const scalar_t* y, scalar_t* grad_y, const at::Tensor& scale,
    at::Tensor& sum_gy, at::Tensor& sum_g) {
  const acc_t* a = scale.data_ptr<acc_t>();
  if (g.layout == Layout::Planes) {
    acc_t *sgy = sum_gy.data_ptr<acc_t>(), *sg = sum_g.data_ptr<acc_t>();
    switch (pack_width<scalar_t>(g, {grad, y, grad_y})) {
      case 8: return launch_backward_planes<scalar_t, acc_t, 8>(g, grad, y, grad_y, a, sgy, sg);
      case 4: return launch_backward_planes<scalar_t, acc_t, 4>(g, grad, y, grad_y, a, sgy, sg);
      case 2: return launch_backward_planes<scalar_t, acc_t, 2>(g, grad, y, grad_y, a, sgy, sg);
      default: return launch_backward_planes<scalar_t, acc_t, 1>(g, grad, y, grad_y, a, sgy, sg);
    }
  }
  const int64_t tiles = (g.spatial + kRowsPerTile - 1) / kRowsPerTile;
  TORCH_CHECK(tiles <= 65535 && g.batch <= 65535, "wfkern.mask_epilogue_backward: tensor too large for the rows kernel");
  at::Tensor part_gy = at::empty({g.batch, tiles, g.channels}, scale.options());
  at::Tensor part_g = at::empty_like(part_gy);
  const dim3 grid((g.channels + kRowsBlock - 1) / kRowsBlock, tiles, g.batch);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (grad_y != nullptr) {
    backward_rows_kernel<scalar_t, acc_t, true><<<grid, kRowsBlock, 0, stream>>>(
        grad, y, grad_y, a, part_gy.data_ptr<acc_t>(), part_g.data_ptr<acc_t>(), g.spatial, g.channels, tiles);
  } else {
    backward_rows_kernel<scalar_t, acc_t, false><<<grid, kRowsBlock, 0, stream>>>(
        grad, y, grad_y, a, part_gy.data_ptr<acc_t>(), part_g.data_ptr<acc_t>(), g.spatial, g.channels, tiles);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::sum_out(sum_gy, part_gy, {1});
  at::sum_out(sum_g, part_g, {1});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mask_epilogue_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels,
    const c10::optional<at::Tensor>& alpha_b, const c10::optional<at::Tensor>& bias, int64_t channel_dim,
    bool compute_grad_y) {
  const int64_t cd = normalize_channel_dim(y, channel_dim);
  check_grad_out(grad_out, y);
  check_epilogue_args(y, alpha_w, labels, alpha_b, bias, cd);
  const c10::cuda::CUDAGuard guard(y.device());
  const CudaTables t = gate_tables_cuda(y, alpha_w, labels, alpha_b, bias, /*write_shift=*/false);
  Geometry g;
  const at::Tensor src = walkable(y, cd, &g);
  const at::Tensor grad = with_strides_of(grad_out, src);
  at::Tensor grad_y = compute_grad_y ? at::empty_like(src) : at::Tensor();
  at::Tensor sum_gy = at::zeros_like(t.mask_w), sum_g = at::zeros_like(t.mask_w);
  if (src.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "wfkern_mask_epilogue_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_sums<scalar_t, acc_t>(
          g, grad.data_ptr<scalar_t>(), src.data_ptr<scalar_t>(), compute_grad_y ? grad_y.data_ptr<scalar_t>() : nullptr,
          t.mask_w, sum_gy, sum_g);
    });
  }
  const c10::optional<at::Tensor> mask_b = t.second.defined() ? c10::optional<at::Tensor>(t.second) : c10::nullopt;
  auto [grad_aw, grad_ab] = alpha_grads_from_sums(sum_gy, sum_g, t.mask_w, mask_b, alpha_w, alpha_b, bias, labels);
  grad_y = compute_grad_y ? like_input(grad_y, src, y) : at::empty({0}, y.options());
  return {grad_y, grad_aw, grad_ab};
}

}  // namespace

TORCH_LIBRARY_IMPL(wfkern, CUDA, m) {
  m.impl("mask_epilogue", &mask_epilogue_cuda);
  m.impl("mask_epilogue_", &mask_epilogue_inplace_cuda);
  m.impl("mask_epilogue_backward", &mask_epilogue_backward_cuda);
}

}  // namespace wfkern
