// CUDA implementation of mask_epilogue and its backward.
// Forward: a tiny gate-table kernel ((B, C) scale and shift), then one vectorised pass over y (built
// with WFKERN_FUSED_TABLE=1: the pass computes its scale and shift itself, one launch; not yet run on a GPU).
// Backward: a gate-table kernel, one pass over grad_out and what the forward saved that writes
// grad_y and reduces the per-(sample, channel) gate terms (fixed order: deterministic), then a
// label-count kernel, one matmul (the scatter by label) and one kernel for the sigmoid factor; built
// with WFKERN_LABEL_SCATTER=1, one label-scatter kernel does those three (not yet run on a GPU).
// Nothing here synchronises with the host; bad labels are reported through page-locked memory.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <vector>

#include "../epilogue_call.h"
#include "../layout.h"

namespace wfkern {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerTile = 64;
constexpr int64_t kMaxGridYZ = 65535;

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

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

int64_t blocks_for(int64_t work, int threads) {
  return std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, 1 << 30));
}

// ---- bad labels, reported without a host synchronisation ------------------------------------------
// A kernel that meets a label outside [-1, num_classes) poisons that sample's row with NaN and writes
// the label to page-locked host memory; the host reads it with a plain load (take_label_error, which
// the Python layer calls). Plain stores: any one bad label is a good report.
struct LabelError {
  int64_t found;
  int64_t label;
  int64_t num_classes;
};

LabelError* label_error_host = nullptr;
LabelError* label_error_device = nullptr;
std::once_flag label_error_once;

LabelError* label_error_buffer() {
  std::call_once(label_error_once, [] {
    // May run while a stream is being captured into a CUDA graph: allocate outside the capture rules.
    const c10::cuda::CUDAStreamCaptureModeGuard relaxed(cudaStreamCaptureModeRelaxed);
    void* host = nullptr;
    C10_CUDA_CHECK(cudaHostAlloc(&host, sizeof(LabelError), cudaHostAllocPortable | cudaHostAllocMapped));
    std::memset(host, 0, sizeof(LabelError));
    void* device = nullptr;
    C10_CUDA_CHECK(cudaHostGetDevicePointer(&device, host, 0));
    label_error_host = static_cast<LabelError*>(host);
    label_error_device = static_cast<LabelError*>(device);
  });
  return label_error_device;
}

// ---- gate tables ------------------------------------------------------------------------------------
// One thread per (b, c): mw = prod over the distinct labels of sample b of sigmoid(alpha_w[l, c])
// (1 for none), mb likewise from alpha_b, s = post_scale[c] (1), t = post_shift[c] (0). Writes
//   forward:  scale = mw * s,  bias_term = bias[c] * (mb - mw) * s + t   (out = y * scale + bias_term)
//   backward: scale = mw * s,  bias_term = bias[c] * mb * s              (see TermInputs below)
// bias_term is written where allocated. A label outside [-1, num_classes) makes the row NaN.
template <typename acc_t>
__global__ void gate_table_kernel(
    const acc_t* __restrict__ alpha_w, const acc_t* __restrict__ alpha_b, const acc_t* __restrict__ bias,
    const acc_t* __restrict__ post_scale, const acc_t* __restrict__ post_shift, const int64_t* __restrict__ labels,
    int64_t batch, int64_t set_size, int64_t channels, int64_t num_classes, bool forward,
    acc_t* __restrict__ scale, acc_t* __restrict__ bias_term, LabelError* error) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < batch * channels; i += stride) {
    const int64_t b = i / channels, c = i % channels;
    const int64_t* set = labels + b * set_size;
    acc_t mw = 1, mb = 1;
    for (int64_t k = 0; k < set_size; ++k) {
      const int64_t l = set[k];
      if (l == -1) continue;
      if (l < -1 || l >= num_classes) {
        mw = mb = acc_t(NAN);
        if (c == 0) {
          error->label = l;
          error->num_classes = num_classes;
          __threadfence_system();
          error->found = 1;
        }
        continue;
      }
      bool repeated = false;  // a set counts each class once
      for (int64_t j = 0; j < k; ++j) repeated |= set[j] == l;
      if (repeated) continue;
      mw *= sigmoid_of(alpha_w[l * channels + c]);
      if (alpha_b != nullptr) mb *= sigmoid_of(alpha_b[l * channels + c]);
    }
    const acc_t s = post_scale != nullptr ? post_scale[c] : acc_t(1);
    const acc_t t = post_shift != nullptr ? post_shift[c] : acc_t(0);
    scale[i] = mw * s;
    if (bias_term == nullptr) continue;
    const acc_t bc = bias != nullptr ? bias[c] : acc_t(0);
    bias_term[i] = forward ? bc * (mb - mw) * s + t : bc * mb * s;
  }
}

// Per-(sample, channel) tables of one call, in the table dtype.
//   forward:  out = y * scale + bias_term        (bias_term: the gated bias and a post affine's shift)
//   backward: grad_y = g * scale; bias_term = q   (the bias gates' coefficient, see TermInputs)
// bias_term is undefined where it would be all zeros.
struct CudaTables {
  at::Tensor scale, bias_term;
};

// An optional per-channel or per-class tensor of a call in the table dtype, contiguous; undefined when absent.
at::Tensor table_of(const OptTensor& t, at::ScalarType dtype) {
  return t.has_value() ? t->to(dtype).contiguous() : at::Tensor();
}

// The tables of a checked call. The forward needs bias_term when there is a bias or a post affine,
// the backward when there is a bias.
CudaTables gate_tables_cuda(const EpilogueCall& call, bool forward) {
  const at::ScalarType dtype = call.table_dtype();
  const at::Tensor aw = call.alpha_w.to(dtype).contiguous();
  const at::Tensor ab = table_of(call.alpha_b, dtype), bs = table_of(call.bias, dtype);
  const at::Tensor ps = table_of(call.post_scale, dtype), pt = table_of(call.post_shift, dtype);
  const int64_t channels = call.alpha_w.size(1);
  CudaTables t;
  t.scale = at::empty({call.y.size(0), channels}, aw.options());
  if (call.bias.has_value() || (forward && call.post_scale.has_value())) t.bias_term = at::empty_like(t.scale);
  const int64_t n = t.scale.numel();
  if (n == 0) return t;
  AT_DISPATCH_FLOATING_TYPES(dtype, "wfkern_gate_table_cuda", [&] {
    gate_table_kernel<scalar_t><<<blocks_for(n, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        aw.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(ab), ptr_or_null<scalar_t>(bs), ptr_or_null<scalar_t>(ps),
        ptr_or_null<scalar_t>(pt), call.sets.data_ptr<int64_t>(), call.sets.size(0), call.sets.size(1), channels,
        call.num_classes(), forward, t.scale.data_ptr<scalar_t>(),
        t.bias_term.defined() ? t.bias_term.data_ptr<scalar_t>() : nullptr, label_error_buffer());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return t;
}

// ---- forward ------------------------------------------------------------------------------------------
// out = y * scale + shift.
// Planes: VEC elements share one (b, c) plane (S % VEC == 0); a thread per pack. index_t is 32-bit
// where the tensor allows it: the division that finds a pack's plane is then several times cheaper.
template <typename scalar_t, typename acc_t, typename index_t, int VEC, bool SHIFT>
__global__ void forward_planes_kernel(
    const scalar_t* y, scalar_t* out, const acc_t* __restrict__ scale, const acc_t* __restrict__ shift,
    index_t n_packs, index_t spatial) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t v = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; v < n_packs; v += stride) {
    const index_t i0 = v * VEC;
    const Pack<scalar_t, VEC> in = *reinterpret_cast<const Pack<scalar_t, VEC>*>(y + i0);
    Pack<scalar_t, VEC> res;
    const index_t plane = i0 / spatial;
    const acc_t a = scale[plane];
    const acc_t sh = SHIFT ? shift[plane] : acc_t(0);
#pragma unroll
    for (int j = 0; j < VEC; ++j) res.v[j] = static_cast<scalar_t>(static_cast<acc_t>(in.v[j]) * a + sh);
    *reinterpret_cast<Pack<scalar_t, VEC>*>(out + i0) = res;
  }
}

// Rows (B * S rows of C channels, C % VEC == 0): blocks of (TX, TY) threads, a thread per VEC
// consecutive channels (x) of every TY-th row (y) of a chunk of consecutive rows. A thread keeps its
// channels' table entries in registers and reloads them only where the chunk enters the next
// sample: the tables are read once per sample and thread, not once per pack (a ViT qkv row is
// 16 bytes of bf16 activation against 64 bytes of fp32 table per pack).
template <typename scalar_t, typename acc_t, int VEC, bool SHIFT>
__global__ void forward_rows_kernel(
    const scalar_t* y, scalar_t* out, const acc_t* __restrict__ scale, const acc_t* __restrict__ shift,
    int64_t rows, int64_t spatial, int64_t channels, int64_t chunk) {
  const int64_t c0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * VEC;
  if (c0 >= channels) return;  // no block-wide synchronisation below
  const int64_t chunks = (rows + chunk - 1) / chunk;
  for (int64_t k = blockIdx.y; k < chunks; k += gridDim.y) {
    const int64_t end = min(rows, (k + 1) * chunk);
    int64_t next_sample_row = -1;  // first row past the sample whose entries are loaded
    acc_t a[VEC], sh[VEC];
    for (int64_t r = k * chunk + threadIdx.y; r < end; r += blockDim.y) {
      if (r >= next_sample_row) {
        const int64_t b = r / spatial;
        next_sample_row = (b + 1) * spatial;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          a[j] = scale[b * channels + c0 + j];
          sh[j] = SHIFT ? shift[b * channels + c0 + j] : acc_t(0);
        }
      }
      const int64_t i = r * channels + c0;
      const Pack<scalar_t, VEC> in = *reinterpret_cast<const Pack<scalar_t, VEC>*>(y + i);
      Pack<scalar_t, VEC> res;
#pragma unroll
      for (int j = 0; j < VEC; ++j) res.v[j] = static_cast<scalar_t>(static_cast<acc_t>(in.v[j]) * a[j] + sh[j]);
      *reinterpret_cast<Pack<scalar_t, VEC>*>(out + i) = res;
    }
  }
}

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

// The block shape for a walk over rows of `packs` channel packs: x covers a row's packs in as few
// blocks as fit kThreads threads (evenly), y stacks rows up to kThreads threads in all.
struct RowsBlock {
  int64_t blocks_x;
  int tx, ty;
};

RowsBlock rows_block(int64_t packs) {
  RowsBlock rb;
  rb.blocks_x = (packs + kThreads - 1) / kThreads;
  rb.tx = static_cast<int>((packs + rb.blocks_x - 1) / rb.blocks_x);
  rb.ty = std::max(1, kThreads / rb.tx);
  return rb;
}

int multiprocessors() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

template <typename scalar_t, typename acc_t, typename index_t, int VEC>
void launch_forward_planes(const Geometry& g, const scalar_t* y, scalar_t* out, const acc_t* scale, const acc_t* shift) {
  const int64_t n_packs = g.batch * g.channels * g.spatial / VEC;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto blocks = blocks_for(n_packs, kThreads);
  const auto n = static_cast<index_t>(n_packs), s = static_cast<index_t>(g.spatial);
  if (shift != nullptr) {
    forward_planes_kernel<scalar_t, acc_t, index_t, VEC, true><<<blocks, kThreads, 0, stream>>>(y, out, scale, shift, n, s);
  } else {
    forward_planes_kernel<scalar_t, acc_t, index_t, VEC, false><<<blocks, kThreads, 0, stream>>>(y, out, scale, shift, n, s);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t, int VEC>
void launch_forward_rows(const Geometry& g, const scalar_t* y, scalar_t* out, const acc_t* scale, const acc_t* shift) {
  const int64_t rows = g.batch * g.spatial;
  const RowsBlock rb = rows_block(g.channels / VEC);
  // About 32 blocks per multiprocessor, each thread walking 1 to 16 rows of its chunk.
  const int64_t wanted_chunks = std::max<int64_t>(1, int64_t(multiprocessors()) * 32 / rb.blocks_x);
  const int64_t rows_per_thread = std::clamp<int64_t>((rows + wanted_chunks * rb.ty - 1) / (wanted_chunks * rb.ty), 1, 16);
  const int64_t chunk = rows_per_thread * rb.ty;
  const dim3 grid(static_cast<unsigned>(rb.blocks_x), static_cast<unsigned>(std::min((rows + chunk - 1) / chunk, kMaxGridYZ)));
  const dim3 block(rb.tx, rb.ty);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (shift != nullptr) {
    forward_rows_kernel<scalar_t, acc_t, VEC, true><<<grid, block, 0, stream>>>(y, out, scale, shift, rows, g.spatial, g.channels, chunk);
  } else {
    forward_rows_kernel<scalar_t, acc_t, VEC, false><<<grid, block, 0, stream>>>(y, out, scale, shift, rows, g.spatial, g.channels, chunk);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t>
void forward_any_width(const Geometry& g, const scalar_t* y, scalar_t* out, const acc_t* scale, const acc_t* shift) {
  const int vec = pack_width<scalar_t>(g, {y, out});
  if (g.layout == Layout::Rows) {
    switch (vec) {
      case 8: return launch_forward_rows<scalar_t, acc_t, 8>(g, y, out, scale, shift);
      case 4: return launch_forward_rows<scalar_t, acc_t, 4>(g, y, out, scale, shift);
      case 2: return launch_forward_rows<scalar_t, acc_t, 2>(g, y, out, scale, shift);
      default: return launch_forward_rows<scalar_t, acc_t, 1>(g, y, out, scale, shift);
    }
  }
  const bool small = g.batch * g.channels * g.spatial < (int64_t(1) << 31);
  switch (vec * (small ? 1 : -1)) {
    case 8: return launch_forward_planes<scalar_t, acc_t, uint32_t, 8>(g, y, out, scale, shift);
    case 4: return launch_forward_planes<scalar_t, acc_t, uint32_t, 4>(g, y, out, scale, shift);
    case 2: return launch_forward_planes<scalar_t, acc_t, uint32_t, 2>(g, y, out, scale, shift);
    case 1: return launch_forward_planes<scalar_t, acc_t, uint32_t, 1>(g, y, out, scale, shift);
    case -8: return launch_forward_planes<scalar_t, acc_t, int64_t, 8>(g, y, out, scale, shift);
    case -4: return launch_forward_planes<scalar_t, acc_t, int64_t, 4>(g, y, out, scale, shift);
    case -2: return launch_forward_planes<scalar_t, acc_t, int64_t, 2>(g, y, out, scale, shift);
    default: return launch_forward_planes<scalar_t, acc_t, int64_t, 1>(g, y, out, scale, shift);
  }
}

#ifdef WFKERN_FUSED_TABLE
// ---- forward in one launch (built with WFKERN_FUSED_TABLE=1; not yet run on a GPU) ----------------
// Each thread computes the scale and shift of the (sample, channel) entries it needs from the gate
// logits, the bias and the post affine, read in their own dtypes: no gate-table kernel and no casts
// before the pass. Once a GPU run verifies it, it replaces the table forward above (the backward keeps
// its tables); until then the two forwards exist side by side.

enum class InputKind : int { Float, Double, Half, BFloat16 };

// A per-class or per-channel input read in its own dtype; ptr is null when the call has none.
struct AnyInput {
  const void* ptr = nullptr;
  InputKind kind = InputKind::Float;
};

template <typename acc_t>
__device__ __forceinline__ acc_t load_as(const AnyInput& in, int64_t i) {
  switch (in.kind) {
    case InputKind::Double: return static_cast<acc_t>(static_cast<const double*>(in.ptr)[i]);
    case InputKind::Half: return static_cast<acc_t>(static_cast<float>(static_cast<const at::Half*>(in.ptr)[i]));
    case InputKind::BFloat16:
      return static_cast<acc_t>(static_cast<float>(static_cast<const at::BFloat16*>(in.ptr)[i]));
    default: return static_cast<acc_t>(static_cast<const float*>(in.ptr)[i]);
  }
}

// What a fused forward reads to compute its entries (the inputs of gate_table_kernel).
struct FusedGates {
  AnyInput alpha_w, alpha_b, bias, post_scale, post_shift;
  const int64_t* sets;
  int64_t set_size, channels, num_classes;
  LabelError* error;
};

// The forward entry of (sample b, channel c), as gate_table_kernel writes it: out = y * scale + shift.
template <typename acc_t>
__device__ __forceinline__ void fused_entry(const FusedGates& g, int64_t b, int64_t c, acc_t& scale, acc_t& shift) {
  const int64_t* set = g.sets + b * g.set_size;
  acc_t mw = 1, mb = 1;
  for (int64_t k = 0; k < g.set_size; ++k) {
    const int64_t l = set[k];
    if (l == -1) continue;
    if (l < -1 || l >= g.num_classes) {
      mw = mb = acc_t(NAN);
      if (c == 0) {
        g.error->label = l;
        g.error->num_classes = g.num_classes;
        __threadfence_system();
        g.error->found = 1;
      }
      continue;
    }
    bool repeated = false;  // a set counts each class once
    for (int64_t j = 0; j < k; ++j) repeated |= set[j] == l;
    if (repeated) continue;
    mw *= sigmoid_of(load_as<acc_t>(g.alpha_w, l * g.channels + c));
    if (g.alpha_b.ptr != nullptr) mb *= sigmoid_of(load_as<acc_t>(g.alpha_b, l * g.channels + c));
  }
  const acc_t s = g.post_scale.ptr != nullptr ? load_as<acc_t>(g.post_scale, c) : acc_t(1);
  const acc_t t = g.post_shift.ptr != nullptr ? load_as<acc_t>(g.post_shift, c) : acc_t(0);
  const acc_t bc = g.bias.ptr != nullptr ? load_as<acc_t>(g.bias, c) : acc_t(0);
  scale = mw * s;
  shift = bc * (mb - mw) * s + t;
}

// Planes (as forward_planes_kernel): each pack computes its plane's entry.
template <typename scalar_t, typename acc_t, typename index_t, int VEC, bool SHIFT>
__global__ void fused_planes_kernel(
    const scalar_t* y, scalar_t* out, const FusedGates gates, index_t n_packs, index_t spatial, index_t channels) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t v = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; v < n_packs; v += stride) {
    const index_t i0 = v * VEC;
    const Pack<scalar_t, VEC> in = *reinterpret_cast<const Pack<scalar_t, VEC>*>(y + i0);
    const index_t plane = i0 / spatial;
    const index_t b = plane / channels;
    acc_t a, sh;
    fused_entry<acc_t>(gates, b, plane - b * channels, a, sh);
    if constexpr (!SHIFT) sh = 0;
    Pack<scalar_t, VEC> res;
#pragma unroll
    for (int j = 0; j < VEC; ++j) res.v[j] = static_cast<scalar_t>(static_cast<acc_t>(in.v[j]) * a + sh);
    *reinterpret_cast<Pack<scalar_t, VEC>*>(out + i0) = res;
  }
}

// Rows (as forward_rows_kernel): a thread computes its channels' entries where its chunk enters a sample.
template <typename scalar_t, typename acc_t, int VEC, bool SHIFT>
__global__ void fused_rows_kernel(
    const scalar_t* y, scalar_t* out, const FusedGates gates, int64_t rows, int64_t spatial, int64_t channels,
    int64_t chunk) {
  const int64_t c0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * VEC;
  if (c0 >= channels) return;
  const int64_t chunks = (rows + chunk - 1) / chunk;
  for (int64_t k = blockIdx.y; k < chunks; k += gridDim.y) {
    const int64_t end = min(rows, (k + 1) * chunk);
    int64_t next_sample_row = -1;
    acc_t a[VEC], sh[VEC];
    for (int64_t r = k * chunk + threadIdx.y; r < end; r += blockDim.y) {
      if (r >= next_sample_row) {
        const int64_t b = r / spatial;
        next_sample_row = (b + 1) * spatial;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          fused_entry<acc_t>(gates, b, c0 + j, a[j], sh[j]);
          if constexpr (!SHIFT) sh[j] = 0;
        }
      }
      const int64_t i = r * channels + c0;
      const Pack<scalar_t, VEC> in = *reinterpret_cast<const Pack<scalar_t, VEC>*>(y + i);
      Pack<scalar_t, VEC> res;
#pragma unroll
      for (int j = 0; j < VEC; ++j) res.v[j] = static_cast<scalar_t>(static_cast<acc_t>(in.v[j]) * a[j] + sh[j]);
      *reinterpret_cast<Pack<scalar_t, VEC>*>(out + i) = res;
    }
  }
}

// SHIFT: the call has a bias or a post affine (else the shift is zero and is not added, as in the table forward).
template <typename scalar_t, typename acc_t, int VEC, bool SHIFT>
void launch_fused(const Geometry& g, const scalar_t* y, scalar_t* out, const FusedGates& gates) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (g.layout == Layout::Rows) {  // the grid of launch_forward_rows
    const int64_t rows = g.batch * g.spatial;
    const RowsBlock rb = rows_block(g.channels / VEC);
    const int64_t wanted_chunks = std::max<int64_t>(1, int64_t(multiprocessors()) * 32 / rb.blocks_x);
    const int64_t rows_per_thread =
        std::clamp<int64_t>((rows + wanted_chunks * rb.ty - 1) / (wanted_chunks * rb.ty), 1, 16);
    const int64_t chunk = rows_per_thread * rb.ty;
    const dim3 grid(static_cast<unsigned>(rb.blocks_x),
                    static_cast<unsigned>(std::min((rows + chunk - 1) / chunk, kMaxGridYZ)));
    fused_rows_kernel<scalar_t, acc_t, VEC, SHIFT><<<grid, dim3(rb.tx, rb.ty), 0, stream>>>(
        y, out, gates, rows, g.spatial, g.channels, chunk);
  } else {
    const int64_t n_packs = g.batch * g.channels * g.spatial / VEC;
    if (g.batch * g.channels * g.spatial < (int64_t(1) << 31)) {
      fused_planes_kernel<scalar_t, acc_t, uint32_t, VEC, SHIFT><<<blocks_for(n_packs, kThreads), kThreads, 0, stream>>>(
          y, out, gates, static_cast<uint32_t>(n_packs), static_cast<uint32_t>(g.spatial),
          static_cast<uint32_t>(g.channels));
    } else {
      fused_planes_kernel<scalar_t, acc_t, int64_t, VEC, SHIFT><<<blocks_for(n_packs, kThreads), kThreads, 0, stream>>>(
          y, out, gates, n_packs, g.spatial, g.channels);
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t, bool SHIFT>
void fused_any_width(const Geometry& g, const scalar_t* y, scalar_t* out, const FusedGates& gates) {
  switch (pack_width<scalar_t>(g, {y, out})) {
    case 8: return launch_fused<scalar_t, acc_t, 8, SHIFT>(g, y, out, gates);
    case 4: return launch_fused<scalar_t, acc_t, 4, SHIFT>(g, y, out, gates);
    case 2: return launch_fused<scalar_t, acc_t, 2, SHIFT>(g, y, out, gates);
    default: return launch_fused<scalar_t, acc_t, 1, SHIFT>(g, y, out, gates);
  }
}

InputKind input_kind(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return InputKind::Float;
    case at::kDouble: return InputKind::Double;
    case at::kHalf: return InputKind::Half;
    case at::kBFloat16: return InputKind::BFloat16;
    default:
      TORCH_CHECK_TYPE(false, "wfkern.mask_epilogue: gates, bias and post affine must be float64, float32, float16 ",
                       "or bfloat16, got ", t.scalar_type());
  }
  return InputKind::Float;  // not reached
}

// Writes the epilogue of a checked call's src into out (out may be src), in one launch.
void launch_epilogue_fused(const EpilogueCall& call, at::Tensor& out) {
  const at::Tensor& src = call.src;
  if (src.numel() == 0) return;
  std::vector<at::Tensor> held;  // the contiguous inputs, alive until the launch is queued
  auto input = [&](const OptTensor& t) {
    if (!t.has_value()) return AnyInput{};
    held.push_back(t->contiguous());
    return AnyInput{held.back().data_ptr(), input_kind(held.back())};
  };
  const FusedGates gates{input(call.alpha_w), input(call.alpha_b), input(call.bias), input(call.post_scale),
                         input(call.post_shift), call.sets.data_ptr<int64_t>(), call.sets.size(1),
                         call.alpha_w.size(1), call.num_classes(), label_error_buffer()};
  const bool shift = call.bias.has_value() || call.post_scale.has_value();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "wfkern_mask_epilogue_fused_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = src.data_ptr<scalar_t>();
    scalar_t* res = out.data_ptr<scalar_t>();
    if (shift) {
      fused_any_width<scalar_t, acc_t, true>(call.geometry, in, res, gates);
    } else {
      fused_any_width<scalar_t, acc_t, false>(call.geometry, in, res, gates);
    }
  });
}
#endif  // WFKERN_FUSED_TABLE

#ifndef WFKERN_FUSED_TABLE
// Writes the epilogue of src into out (out may be src itself); both walkable with equal strides.
void launch_epilogue(const at::Tensor& src, at::Tensor& out, const Geometry& g, const CudaTables& t) {
  if (src.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "wfkern_mask_epilogue_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* shift = t.bias_term.defined() ? t.bias_term.data_ptr<acc_t>() : nullptr;
    const scalar_t* in = src.data_ptr<scalar_t>();
    scalar_t* res = out.data_ptr<scalar_t>();
    forward_any_width<scalar_t, acc_t>(g, in, res, t.scale.data_ptr<acc_t>(), shift);
  });
}
#endif

at::Tensor mask_epilogue_cuda(const EpilogueCall& call, bool /*save_output: autograd's business*/) {
  const c10::cuda::CUDAGuard guard(call.y.device());
  at::Tensor out = at::empty_like(call.src);
#ifdef WFKERN_FUSED_TABLE
  launch_epilogue_fused(call, out);
#else
  launch_epilogue(call.src, out, call.geometry, gate_tables_cuda(call, /*forward=*/true));
#endif
  return call.like_y(out);
}

void mask_epilogue_inplace_cuda(const EpilogueCall& call) {
  const c10::cuda::CUDAGuard guard(call.y.device());
  at::Tensor src = call.src;
#ifdef WFKERN_FUSED_TABLE
  launch_epilogue_fused(call, src);
#else
  launch_epilogue(src, src, call.geometry, gate_tables_cuda(call, /*forward=*/true));
#endif
  call.store_src_in_y();
}

// ---- backward -----------------------------------------------------------------------------------------
// out = s * ((y - bias) * mw + bias * mb) + t. Over a (b, c), with G = sum g and X = sum g * x for
// the saved x, the weight gates' term sum g * s * (y - bias) * mw is
//   a * (X - bias * G)     when x is y (a = s * mw, the table `scale`),
//   X - (t + q) * G        when x is the output (q = s * bias * mb, the table `bias_term`),
// and the bias gates' term is q * G. Both go to terms (B, 2C): [b, c] and [b, C + c].
template <typename acc_t>
struct TermInputs {
  const acc_t* scale;       // (B, C) a = s * mw: CudaTables::scale
  const acc_t* q;           // (B, C) CudaTables::bias_term, null without a bias
  const acc_t* bias;        // (C,), null without a bias
  const acc_t* post_shift;  // (C,) or null
  bool saved_is_output;
  acc_t* terms;             // (B, 2C)
};

template <typename acc_t>
__device__ __forceinline__ void write_alpha_terms(acc_t sum_gx, acc_t sum_g, int64_t b, int64_t c, int64_t channels,
                                                  const TermInputs<acc_t>& in) {
  const int64_t i = b * channels + c;
  const acc_t qv = in.q != nullptr ? in.q[i] : acc_t(0);
  acc_t w;
  if (in.saved_is_output) {
    w = sum_gx - ((in.post_shift != nullptr ? in.post_shift[c] : acc_t(0)) + qv) * sum_g;
  } else {
    w = in.scale[i] * (sum_gx - (in.bias != nullptr ? in.bias[c] : acc_t(0)) * sum_g);
  }
  in.terms[b * 2 * channels + c] = w;
  if (in.q != nullptr) in.terms[b * 2 * channels + channels + c] = qv * sum_g;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

// Planes layout: TPP threads per (b, c) plane of S contiguous elements (kThreads / TPP planes per
// block); each thread keeps two packs of both inputs in flight. Blocks stride over planes.
template <typename scalar_t, typename acc_t, int VEC, int TPP, bool GRAD_Y>
__global__ void backward_planes_kernel(
    const scalar_t* __restrict__ grad, const scalar_t* __restrict__ out, scalar_t* __restrict__ grad_y,
    const TermInputs<acc_t> in, int64_t planes, int64_t spatial, int64_t channels) {
  constexpr int kPlanesPerBlock = kThreads / TPP;
  constexpr int kWarpsPerPlane = TPP / 32;
  __shared__ acc_t partial[2][kThreads / 32];
  const int local = threadIdx.x % TPP, slot = threadIdx.x / TPP;
  for (int64_t first = blockIdx.x * static_cast<int64_t>(kPlanesPerBlock); first < planes;
       first += static_cast<int64_t>(gridDim.x) * kPlanesPerBlock) {  // uniform per block
    const int64_t plane = first + slot;
    acc_t acc_go = 0, acc_g = 0;
    if (plane < planes) {
      const acc_t a = in.scale[plane];
      const int64_t base = plane * spatial;
      int64_t s = static_cast<int64_t>(local) * VEC;
      for (; s + TPP * VEC < spatial; s += 2 * TPP * VEC) {  // two packs per thread in flight
        const Pack<scalar_t, VEC> g0 = *reinterpret_cast<const Pack<scalar_t, VEC>*>(grad + base + s);
        const Pack<scalar_t, VEC> g1 = *reinterpret_cast<const Pack<scalar_t, VEC>*>(grad + base + s + TPP * VEC);
        const Pack<scalar_t, VEC> o0 = *reinterpret_cast<const Pack<scalar_t, VEC>*>(out + base + s);
        const Pack<scalar_t, VEC> o1 = *reinterpret_cast<const Pack<scalar_t, VEC>*>(out + base + s + TPP * VEC);
        Pack<scalar_t, VEC> r0, r1;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const acc_t gv0 = static_cast<acc_t>(g0.v[j]), gv1 = static_cast<acc_t>(g1.v[j]);
          acc_go += gv0 * static_cast<acc_t>(o0.v[j]) + gv1 * static_cast<acc_t>(o1.v[j]);
          acc_g += gv0 + gv1;
          if constexpr (GRAD_Y) {
            r0.v[j] = static_cast<scalar_t>(gv0 * a);
            r1.v[j] = static_cast<scalar_t>(gv1 * a);
          }
        }
        if constexpr (GRAD_Y) {
          *reinterpret_cast<Pack<scalar_t, VEC>*>(grad_y + base + s) = r0;
          *reinterpret_cast<Pack<scalar_t, VEC>*>(grad_y + base + s + TPP * VEC) = r1;
        }
      }
      if (s < spatial) {  // at most one pack left for this thread
        const Pack<scalar_t, VEC> g0 = *reinterpret_cast<const Pack<scalar_t, VEC>*>(grad + base + s);
        const Pack<scalar_t, VEC> o0 = *reinterpret_cast<const Pack<scalar_t, VEC>*>(out + base + s);
        Pack<scalar_t, VEC> r0;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const acc_t gv = static_cast<acc_t>(g0.v[j]);
          acc_go += gv * static_cast<acc_t>(o0.v[j]);
          acc_g += gv;
          if constexpr (GRAD_Y) r0.v[j] = static_cast<scalar_t>(gv * a);
        }
        if constexpr (GRAD_Y) *reinterpret_cast<Pack<scalar_t, VEC>*>(grad_y + base + s) = r0;
      }
    }
    acc_go = warp_sum(acc_go);
    acc_g = warp_sum(acc_g);
    if constexpr (kWarpsPerPlane > 1) {
      const int warp = threadIdx.x / 32;
      if ((threadIdx.x & 31) == 0) {
        partial[0][warp] = acc_go;
        partial[1][warp] = acc_g;
      }
      __syncthreads();
      if (local == 0) {
        acc_go = 0;
        acc_g = 0;
        for (int w = 0; w < kWarpsPerPlane; ++w) {  // fixed order: deterministic
          acc_go += partial[0][slot * kWarpsPerPlane + w];
          acc_g += partial[1][slot * kWarpsPerPlane + w];
        }
      }
      __syncthreads();  // partial is reused by the next plane group
    }
    if (local == 0 && plane < planes) {
      write_alpha_terms(acc_go, acc_g, plane / channels, plane % channels, channels, in);
    }
  }
}

// Rows layout (B, S, C): blocks of (TX, TY) threads (rows_block), a thread per VEC consecutive
// channels (x) of every TY-th row (y) of a tile of `tile_rows` rows of one sample; the TY partial
// sums meet in shared memory (fixed order: deterministic) and a tile writes one partial sum per
// channel. Narrow rows (64 channels: 8 packs) stack 32 rows per block instead of leaving most of a
// warp idle. Blocks stride over tiles (grid y) and samples (grid z): any batch and row count fits.
template <typename scalar_t, typename acc_t, int VEC, bool GRAD_Y>
__global__ void backward_rows_kernel(
    const scalar_t* __restrict__ grad, const scalar_t* __restrict__ out, scalar_t* __restrict__ grad_y,
    const acc_t* __restrict__ scale, acc_t* __restrict__ part_go, acc_t* __restrict__ part_g, int64_t batch,
    int64_t spatial, int64_t channels, int64_t tiles, int64_t tile_rows) {
  __shared__ acc_t shared_go[kThreads * VEC];
  __shared__ acc_t shared_g[kThreads * VEC];
  const int64_t c0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * VEC;
  const bool active = c0 < channels;  // idle threads stay for the barriers
  const int slot = (threadIdx.y * blockDim.x + threadIdx.x) * VEC;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    acc_t a[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) a[j] = active ? scale[b * channels + c0 + j] : acc_t(0);
    for (int64_t t = blockIdx.y; t < tiles; t += gridDim.y) {
      acc_t acc_go[VEC] = {}, acc_g[VEC] = {};
      const int64_t s_end = active ? min(spatial, (t + 1) * tile_rows) : 0;
#pragma unroll 4
      for (int64_t s = t * tile_rows + threadIdx.y; s < s_end; s += blockDim.y) {
        const int64_t i = (b * spatial + s) * channels + c0;
        const Pack<scalar_t, VEC> gp = *reinterpret_cast<const Pack<scalar_t, VEC>*>(grad + i);
        const Pack<scalar_t, VEC> op = *reinterpret_cast<const Pack<scalar_t, VEC>*>(out + i);
        Pack<scalar_t, VEC> gyp;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const acc_t gv = static_cast<acc_t>(gp.v[j]);
          acc_go[j] += gv * static_cast<acc_t>(op.v[j]);
          acc_g[j] += gv;
          if constexpr (GRAD_Y) gyp.v[j] = static_cast<scalar_t>(gv * a[j]);
        }
        if constexpr (GRAD_Y) *reinterpret_cast<Pack<scalar_t, VEC>*>(grad_y + i) = gyp;
      }
      if (blockDim.y > 1) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          shared_go[slot + j] = acc_go[j];
          shared_g[slot + j] = acc_g[j];
        }
        __syncthreads();
        if (threadIdx.y == 0) {
          for (int y = 1; y < static_cast<int>(blockDim.y); ++y) {
            const int other = (y * blockDim.x + threadIdx.x) * VEC;
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
              acc_go[j] += shared_go[other + j];
              acc_g[j] += shared_g[other + j];
            }
          }
        }
        __syncthreads();  // shared is reused by the next tile
      }
      if (active && threadIdx.y == 0) {
        const int64_t o = (b * tiles + t) * channels + c0;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          part_go[o + j] = acc_go[j];
          part_g[o + j] = acc_g[j];
        }
      }
    }
  }
}

// One thread per (b, c): the sum over tiles (fixed order), then the gate terms.
template <typename acc_t>
__global__ void reduce_tiles_kernel(
    const acc_t* __restrict__ part_go, const acc_t* __restrict__ part_g, const TermInputs<acc_t> in, int64_t batch,
    int64_t tiles, int64_t channels) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < batch * channels; i += stride) {
    const int64_t b = i / channels, c = i % channels;
    acc_t go = 0, g = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      go += part_go[(b * tiles + t) * channels + c];
      g += part_g[(b * tiles + t) * channels + c];
    }
    write_alpha_terms(go, g, b, c, channels, in);
  }
}

// counts[b, l] = 1 when class l is in sample b's set (each class once), else 0.
template <typename acc_t>
__global__ void label_counts_kernel(
    const int64_t* __restrict__ labels, int64_t batch, int64_t set_size, int64_t num_classes, acc_t* __restrict__ counts) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < batch * num_classes; i += stride) {
    const int64_t b = i / num_classes, l = i % num_classes;
    bool in = false;
    for (int64_t k = 0; k < set_size; ++k) in |= labels[b * set_size + k] == l;
    counts[i] = in ? acc_t(1) : acc_t(0);
  }
}

// grad_alpha[l, c] = scattered[l, c] * (1 - sigmoid(alpha[l, c])), for the weight and the bias gates.
template <typename acc_t>
__global__ void sigmoid_factor_kernel(
    const acc_t* __restrict__ scattered, const acc_t* __restrict__ alpha_w, const acc_t* __restrict__ alpha_b,
    int64_t num_classes, int64_t channels, acc_t* __restrict__ grad_w, acc_t* __restrict__ grad_b) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_classes * channels; i += stride) {
    const int64_t l = i / channels, c = i % channels;
    grad_w[i] = scattered[l * 2 * channels + c] * (acc_t(1) - sigmoid_of(alpha_w[i]));
    if (grad_b != nullptr) grad_b[i] = scattered[l * 2 * channels + channels + c] * (acc_t(1) - sigmoid_of(alpha_b[i]));
  }
}

#ifdef WFKERN_LABEL_SCATTER
// grad_alpha[l, c] = (1 - sigmoid(alpha[l, c])) * the sum of terms[b, c] over the samples b whose set holds l (each
// class once), for the weight gates (c < C) and the bias gates (C + c): one kernel in place of the label counts,
// the matmul and the sigmoid factor. A block takes one class (grid-stride over classes past the grid's y limit)
// and blockDim.x columns; it flags its class's samples in shared memory, a chunk of the batch at a time, then each
// thread sums its column over the flagged samples in sample order (deterministic).
constexpr int kScatterChunk = 1024;

template <typename acc_t>
__global__ void label_scatter_kernel(
    const acc_t* __restrict__ terms, const int64_t* __restrict__ sets, int64_t batch, int64_t set_size,
    const acc_t* __restrict__ alpha_w, const acc_t* __restrict__ alpha_b, int64_t num_classes, int64_t channels,
    acc_t* __restrict__ grad_w, acc_t* __restrict__ grad_b) {
  __shared__ bool flags[kScatterChunk];
  const int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (int64_t l = blockIdx.y; l < num_classes; l += gridDim.y) {  // uniform in the block: __syncthreads is safe
    acc_t sum_w = acc_t(0), sum_b = acc_t(0);
    for (int64_t first = 0; first < batch; first += kScatterChunk) {
      const int64_t n = std::min<int64_t>(kScatterChunk, batch - first);
      __syncthreads();  // every thread is done with the previous chunk's flags
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        bool in = false;
        for (int64_t k = 0; k < set_size; ++k) in |= sets[(first + i) * set_size + k] == l;
        flags[i] = in;
      }
      __syncthreads();
      if (col < channels) {
        for (int64_t i = 0; i < n; ++i) {
          if (!flags[i]) continue;
          const acc_t* row = terms + (first + i) * 2 * channels;
          sum_w += row[col];
          sum_b += row[channels + col];
        }
      }
    }
    if (col < channels) {
      const int64_t at = l * channels + col;
      grad_w[at] = sum_w * (acc_t(1) - sigmoid_of(alpha_w[at]));
      if (grad_b != nullptr) grad_b[at] = sum_b * (acc_t(1) - sigmoid_of(alpha_b[at]));
    }
  }
}
#endif  // WFKERN_LABEL_SCATTER

template <typename scalar_t, typename acc_t, int VEC, int TPP>
void launch_backward_planes(
    const Geometry& g, const scalar_t* grad, const scalar_t* out, scalar_t* grad_y, const TermInputs<acc_t>& in) {
  const int64_t planes = g.batch * g.channels;
  constexpr int kPlanesPerBlock = kThreads / TPP;
  const int64_t blocks = std::min<int64_t>((planes + kPlanesPerBlock - 1) / kPlanesPerBlock, 1 << 20);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (grad_y != nullptr) {
    backward_planes_kernel<scalar_t, acc_t, VEC, TPP, true>
        <<<blocks, kThreads, 0, stream>>>(grad, out, grad_y, in, planes, g.spatial, g.channels);
  } else {
    backward_planes_kernel<scalar_t, acc_t, VEC, TPP, false>
        <<<blocks, kThreads, 0, stream>>>(grad, out, grad_y, in, planes, g.spatial, g.channels);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Threads per plane: enough for about two packs each, between a warp and a block.
template <typename scalar_t, typename acc_t, int VEC>
void backward_planes_any_tpp(
    const Geometry& g, const scalar_t* grad, const scalar_t* out, scalar_t* grad_y, const TermInputs<acc_t>& in) {
  const int64_t packs = g.spatial / VEC;
  if (packs > 256) return launch_backward_planes<scalar_t, acc_t, VEC, 256>(g, grad, out, grad_y, in);
  if (packs > 128) return launch_backward_planes<scalar_t, acc_t, VEC, 128>(g, grad, out, grad_y, in);
  if (packs > 64) return launch_backward_planes<scalar_t, acc_t, VEC, 64>(g, grad, out, grad_y, in);
  return launch_backward_planes<scalar_t, acc_t, VEC, 32>(g, grad, out, grad_y, in);
}

template <typename scalar_t, typename acc_t, int VEC>
void launch_backward_rows(
    const Geometry& g, const scalar_t* grad, const scalar_t* out, scalar_t* grad_y, const TermInputs<acc_t>& in) {
  const RowsBlock rb = rows_block(g.channels / VEC);
  // Each thread walks at least 8 rows of a tile; a wide row (one row per block) walks 64.
  const int64_t tile_rows = std::max<int64_t>(kRowsPerTile, int64_t(rb.ty) * 8);
  const int64_t tiles = (g.spatial + tile_rows - 1) / tile_rows;
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value).device(at::kCUDA);
  at::Tensor part_go = at::empty({g.batch, tiles, g.channels}, options);
  at::Tensor part_g = at::empty_like(part_go);
  const dim3 grid(static_cast<unsigned>(rb.blocks_x), static_cast<unsigned>(std::min(tiles, kMaxGridYZ)),
                  static_cast<unsigned>(std::min(g.batch, kMaxGridYZ)));
  const dim3 block(rb.tx, rb.ty);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  acc_t *pgo = part_go.data_ptr<acc_t>(), *pg = part_g.data_ptr<acc_t>();
  if (grad_y != nullptr) {
    backward_rows_kernel<scalar_t, acc_t, VEC, true>
        <<<grid, block, 0, stream>>>(grad, out, grad_y, in.scale, pgo, pg, g.batch, g.spatial, g.channels, tiles, tile_rows);
  } else {
    backward_rows_kernel<scalar_t, acc_t, VEC, false>
        <<<grid, block, 0, stream>>>(grad, out, grad_y, in.scale, pgo, pg, g.batch, g.spatial, g.channels, tiles, tile_rows);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t n = g.batch * g.channels;
  reduce_tiles_kernel<acc_t><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(pgo, pg, in, g.batch, tiles, g.channels);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// One pass over grad and the saved tensor: grad_y (if wanted) and the gate terms (B, 2C).
template <typename scalar_t, typename acc_t>
void backward_terms(
    const Geometry& g, const scalar_t* grad, const scalar_t* saved, scalar_t* grad_y, const TermInputs<acc_t>& in) {
  if (g.layout == Layout::Planes) {
    switch (pack_width<scalar_t>(g, {grad, saved, grad_y})) {
      case 8: return backward_planes_any_tpp<scalar_t, acc_t, 8>(g, grad, saved, grad_y, in);
      case 4: return backward_planes_any_tpp<scalar_t, acc_t, 4>(g, grad, saved, grad_y, in);
      case 2: return backward_planes_any_tpp<scalar_t, acc_t, 2>(g, grad, saved, grad_y, in);
      default: return backward_planes_any_tpp<scalar_t, acc_t, 1>(g, grad, saved, grad_y, in);
    }
  }
  switch (pack_width<scalar_t>(g, {grad, saved, grad_y})) {
    case 8: return launch_backward_rows<scalar_t, acc_t, 8>(g, grad, saved, grad_y, in);
    case 4: return launch_backward_rows<scalar_t, acc_t, 4>(g, grad, saved, grad_y, in);
    case 2: return launch_backward_rows<scalar_t, acc_t, 2>(g, grad, saved, grad_y, in);
    default: return launch_backward_rows<scalar_t, acc_t, 1>(g, grad, saved, grad_y, in);
  }
}

// grad_alpha = (1 - sigmoid(alpha)) * counts^T @ terms: one small kernel, a matmul and another (or, built with
// WFKERN_LABEL_SCATTER, the one label-scatter kernel).
template <typename scalar_t>
void scatter_alpha_grads(const at::Tensor& terms, const at::Tensor& sets, const at::Tensor& aw, const at::Tensor& ab,
                         at::Tensor& grad_w, at::Tensor& grad_b) {
  const int64_t batch = sets.size(0), num_classes = aw.size(0), channels = aw.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  scalar_t* gb = grad_b.defined() ? grad_b.data_ptr<scalar_t>() : nullptr;
#ifdef WFKERN_LABEL_SCATTER
  const dim3 grid(static_cast<unsigned>((channels + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>(num_classes, kMaxGridYZ)));
  label_scatter_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
      terms.data_ptr<scalar_t>(), sets.data_ptr<int64_t>(), batch, sets.size(1), aw.data_ptr<scalar_t>(),
      ptr_or_null<scalar_t>(ab), num_classes, channels, grad_w.data_ptr<scalar_t>(), gb);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#else
  at::Tensor counts = at::empty({batch, num_classes}, terms.options());
  label_counts_kernel<scalar_t><<<blocks_for(batch * num_classes, kThreads), kThreads, 0, stream>>>(
      sets.data_ptr<int64_t>(), batch, sets.size(1), num_classes, counts.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor scattered = counts.t().matmul(terms);  // (Nc, 2C), deterministic
  sigmoid_factor_kernel<scalar_t><<<blocks_for(num_classes * channels, kThreads), kThreads, 0, stream>>>(
      scattered.data_ptr<scalar_t>(), aw.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(ab), num_classes, channels,
      grad_w.data_ptr<scalar_t>(), gb);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

std::tuple<at::Tensor, at::Tensor> alpha_grads_cuda(const at::Tensor& terms, const EpilogueCall& call) {
  const at::ScalarType dtype = terms.scalar_type();
  const at::Tensor& sets = call.sets;
  const at::Tensor& alpha_w = call.alpha_w;
  const int64_t batch = sets.size(0), num_classes = alpha_w.size(0), channels = alpha_w.size(1);
  const at::Tensor aw = alpha_w.to(dtype).contiguous(), ab = table_of(call.alpha_b, dtype);
  at::Tensor grad_w = at::empty({num_classes, channels}, terms.options());
  at::Tensor grad_b = ab.defined() ? at::empty_like(grad_w) : at::Tensor();
  if (batch == 0 || channels == 0) {
    grad_w.zero_();
    if (grad_b.defined()) grad_b.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES(dtype, "wfkern_alpha_grads_cuda",
                               [&] { scatter_alpha_grads<scalar_t>(terms, sets, aw, ab, grad_w, grad_b); });
  }
  return {grad_w.to(alpha_w.scalar_type()),
          call.alpha_b.has_value() ? grad_b.to(call.alpha_b->scalar_type()) : at::empty({0}, alpha_w.options())};
}

Grads mask_epilogue_backward_cuda(const at::Tensor& grad, const EpilogueCall& call, bool saved_is_output,
                                  bool compute_grad_y) {
  const c10::cuda::CUDAGuard guard(call.y.device());
  const CudaTables t = gate_tables_cuda(call, /*forward=*/false);
  const at::Tensor& src = call.src;
  const Geometry& g = call.geometry;
  at::Tensor grad_y = compute_grad_y ? at::empty_like(src) : at::Tensor();
  at::Tensor terms = at::zeros({g.batch, 2 * g.channels}, t.scale.options());
  const at::ScalarType dtype = t.scale.scalar_type();
  const at::Tensor shift = table_of(call.post_shift, dtype), bias_table = table_of(call.bias, dtype);
  if (src.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "wfkern_mask_epilogue_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const TermInputs<acc_t> in{t.scale.data_ptr<acc_t>(), t.bias_term.defined() ? t.bias_term.data_ptr<acc_t>() : nullptr,
                                 ptr_or_null<acc_t>(bias_table), ptr_or_null<acc_t>(shift), saved_is_output,
                                 terms.data_ptr<acc_t>()};
      backward_terms<scalar_t, acc_t>(
          g, grad.data_ptr<scalar_t>(), src.data_ptr<scalar_t>(), compute_grad_y ? grad_y.data_ptr<scalar_t>() : nullptr,
          in);
    });
  }
  auto [grad_aw, grad_ab] = alpha_grads_cuda(terms, call);
  grad_y = compute_grad_y ? call.like_y(grad_y) : at::empty({0}, call.y.options());
  return {grad_y, grad_aw, grad_ab};
}

}  // namespace

// (found, label, num_classes) of the first bad label a kernel reported since the last call; clears it.
std::vector<int64_t> take_label_error() {
  volatile LabelError* err = label_error_host;
  if (err == nullptr || err->found == 0) return {0, 0, 0};
  std::vector<int64_t> result{1, err->label, err->num_classes};
  err->found = 0;
  return result;
}

TORCH_LIBRARY_IMPL(wfkern, CompositeImplicitAutograd, m) {
  m.impl("take_label_error", &take_label_error);
}

TORCH_LIBRARY_IMPL(wfkern, CUDA, m) {
  m.impl("mask_epilogue", &forward_entry<mask_epilogue_cuda>);
  m.impl("mask_epilogue_", &inplace_entry<mask_epilogue_inplace_cuda>);
  m.impl("mask_epilogue_backward", &backward_entry<mask_epilogue_backward_cuda>);
}

}  // namespace wfkern
