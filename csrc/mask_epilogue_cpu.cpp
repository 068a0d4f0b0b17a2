// CPU implementation of mask_epilogue and its backward: one parallel pass over y.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <utility>

#include "epilogue_call.h"
#include "gate_grads.h"
#include "layout.h"

namespace wfkern {

namespace {

void check_label_values_cpu(const at::Tensor& sets, int64_t num_classes) {
  const int64_t* data = sets.data_ptr<int64_t>();
  for (int64_t i = 0; i < sets.numel(); ++i) {
    TORCH_CHECK_VALUE(
        data[i] >= -1 && data[i] < num_classes, "wfkern.mask_epilogue: labels must be in [-1, ", num_classes,
        ") (-1 = forget nothing), got ", data[i]);
  }
}

// True when slot k of a set repeats an earlier label: a set counts each class once.
inline bool repeats_earlier(const int64_t* set, int64_t k) {
  for (int64_t j = 0; j < k; ++j) {
    if (set[j] == set[k]) return true;
  }
  return false;
}

// mask[b] = prod over the distinct labels l >= 0 of sample b's set of gates[row(b, k)]; 1 for an
// empty set. gates holds sigmoid rows: one per class (per_class) or one per (b, k) slot, whichever
// is fewer to compute.
template <typename acc_t>
void product_of_gates(const at::Tensor& gates, bool per_class, const at::Tensor& sets, at::Tensor& mask) {
  const int64_t batch = sets.size(0), set_size = sets.size(1), channels = gates.size(1);
  const acc_t* g = gates.data_ptr<acc_t>();
  const int64_t* lab = sets.data_ptr<int64_t>();
  acc_t* m = mask.data_ptr<acc_t>();
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      acc_t* row = m + b * channels;
      const int64_t* set = lab + b * set_size;
      std::fill(row, row + channels, acc_t(1));
      for (int64_t k = 0; k < set_size; ++k) {
        const int64_t l = set[k];
        if (l < 0 || repeats_earlier(set, k)) continue;
        const acc_t* src = g + (per_class ? l : b * set_size + k) * channels;
        for (int64_t c = 0; c < channels; ++c) row[c] *= src[c];
      }
    }
  });
}

// mask[b, c] = prod over distinct labels of sigmoid(alpha[l, c]); sets already checked.
at::Tensor gate_table_cpu(const at::Tensor& alpha, const at::Tensor& sets, at::ScalarType dtype) {
  const bool per_class = alpha.size(0) <= sets.numel();
  const at::Tensor logits = per_class ? alpha.to(dtype) : alpha.to(dtype).index_select(0, sets.clamp_min(0).flatten());
  const at::Tensor gates = at::sigmoid(logits).contiguous();  // vectorised
  at::Tensor mask = at::empty({sets.size(0), alpha.size(1)}, alpha.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES(dtype, "wfkern_gate_table", [&] { product_of_gates<scalar_t>(gates, per_class, sets, mask); });
  return mask;
}

int64_t grain_for(int64_t inner) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, inner)); }

// out = y * scale + shift over a (B, C, S) or (B, S, C) walk; shift may be null.
template <typename scalar_t, typename acc_t>
void affine_forward(const Geometry& g, const scalar_t* y, scalar_t* out, const acc_t* scale, const acc_t* shift) {
  const int64_t C = g.channels, S = g.spatial;
  if (g.layout == Layout::Planes) {
    at::parallel_for(0, g.batch * C, grain_for(S), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const acc_t a = scale[p], sh = shift ? shift[p] : acc_t(0);
        const scalar_t* src = y + p * S;
        scalar_t* dst = out + p * S;
        for (int64_t s = 0; s < S; ++s) dst[s] = static_cast<scalar_t>(static_cast<acc_t>(src[s]) * a + sh);
      }
    });
    return;
  }
  at::parallel_for(0, g.batch * S, grain_for(C), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / S;
      const acc_t* a = scale + b * C;
      const scalar_t* src = y + r * C;
      scalar_t* dst = out + r * C;
      if (shift) {
        const acc_t* sh = shift + b * C;
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(static_cast<acc_t>(src[c]) * a[c] + sh[c]);
      } else {
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(static_cast<acc_t>(src[c]) * a[c]);
      }
    }
  });
}

constexpr int64_t kRowsPerTile = 64;
constexpr int kLanes = 16;  // independent partial sums: the compiler vectorises them without reassociating

// Sums of one contiguous plane: grad_y = g * a (if GRAD_Y), returns {sum g*x, sum g} (x: what the forward saved).
template <bool GRAD_Y, typename scalar_t, typename acc_t>
std::pair<acc_t, acc_t> plane_sums(const scalar_t* grad, const scalar_t* y, scalar_t* grad_y, acc_t a, int64_t n) {
  if (n < 4 * kLanes) {  // small planes (deep layers): lanes would cost more than they save
    acc_t sum_gy = 0, sum_g = 0;
    for (int64_t s = 0; s < n; ++s) {
      const acc_t gv = static_cast<acc_t>(grad[s]);
      if constexpr (GRAD_Y) grad_y[s] = static_cast<scalar_t>(gv * a);
      sum_gy += gv * static_cast<acc_t>(y[s]);
      sum_g += gv;
    }
    return {sum_gy, sum_g};
  }
  acc_t lane_gy[kLanes] = {}, lane_g[kLanes] = {};
  int64_t s = 0;
  for (; s + kLanes <= n; s += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const acc_t gv = static_cast<acc_t>(grad[s + j]);
      if constexpr (GRAD_Y) grad_y[s + j] = static_cast<scalar_t>(gv * a);
      lane_gy[j] += gv * static_cast<acc_t>(y[s + j]);
      lane_g[j] += gv;
    }
  }
  for (int j = 0; s < n; ++s, ++j) {
    const acc_t gv = static_cast<acc_t>(grad[s]);
    if constexpr (GRAD_Y) grad_y[s] = static_cast<scalar_t>(gv * a);
    lane_gy[j] += gv * static_cast<acc_t>(y[s]);
    lane_g[j] += gv;
  }
  acc_t sum_gy = 0, sum_g = 0;
  for (int j = 0; j < kLanes; ++j) {
    sum_gy += lane_gy[j];
    sum_g += lane_g[j];
  }
  return {sum_gy, sum_g};
}

// One pass over grad_out and x (what the forward saved): grad_y = g * scale (if GRAD_Y), sum_gy[b,c] = sum g*x, sum_g[b,c] = sum g.
// Reductions run in a fixed order (per plane, or per row tile then over tiles): deterministic.
template <bool GRAD_Y, typename scalar_t, typename acc_t>
void affine_backward(
    const Geometry& g, const scalar_t* grad, const scalar_t* y, scalar_t* grad_y, const acc_t* scale, acc_t* sum_gy,
    acc_t* sum_g) {
  const int64_t C = g.channels, S = g.spatial;
  if (g.layout == Layout::Planes) {
    at::parallel_for(0, g.batch * C, grain_for(S), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        std::tie(sum_gy[p], sum_g[p]) =
            plane_sums<GRAD_Y>(grad + p * S, y + p * S, GRAD_Y ? grad_y + p * S : nullptr, scale[p], S);
      }
    });
    return;
  }
  const int64_t tiles = (S + kRowsPerTile - 1) / kRowsPerTile;
  std::vector<acc_t> part_gy(g.batch * tiles * C, acc_t(0)), part_g(g.batch * tiles * C, acc_t(0));
  at::parallel_for(0, g.batch * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / tiles, t = bt % tiles;
      const acc_t* a = scale + b * C;
      acc_t* pgy = part_gy.data() + bt * C;
      acc_t* pg = part_g.data() + bt * C;
      for (int64_t s = t * kRowsPerTile; s < std::min(S, (t + 1) * kRowsPerTile); ++s) {
        const int64_t row = (b * S + s) * C;
        for (int64_t c = 0; c < C; ++c) {  // per-channel accumulators: vectorises as is
          const acc_t gv = static_cast<acc_t>(grad[row + c]);
          if constexpr (GRAD_Y) grad_y[row + c] = static_cast<scalar_t>(gv * a[c]);
          pgy[c] += gv * static_cast<acc_t>(y[row + c]);
          pg[c] += gv;
        }
      }
    }
  });
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t c = 0; c < C; ++c) {
        acc_t acc_gy = 0, acc_g = 0;
        for (int64_t t = 0; t < tiles; ++t) {
          acc_gy += part_gy[(b * tiles + t) * C + c];
          acc_g += part_g[(b * tiles + t) * C + c];
        }
        sum_gy[b * C + c] = acc_gy;
        sum_g[b * C + c] = acc_g;
      }
    }
  });
}

struct Tables {
  at::Tensor mask_w, mask_b;  // (B, C); mask_b undefined without a bias
  OptTensor mask_b_opt() const { return mask_b.defined() ? OptTensor(mask_b) : c10::nullopt; }
};

// The gate tables of a checked call, after the label values are checked on the host.
Tables prepare(const EpilogueCall& call) {
  check_label_values_cpu(call.sets, call.num_classes());
  Tables t;
  t.mask_w = gate_table_cpu(call.alpha_w, call.sets, call.table_dtype());
  if (call.alpha_b.has_value()) t.mask_b = gate_table_cpu(*call.alpha_b, call.sets, call.table_dtype());
  return t;
}

// out = src * scale + shift per (sample, channel), where scale = mask_w * post_scale and
// shift = (bias * (mask_b - mask_w)) * post_scale + post_shift (terms present only when given).
void write_epilogue(const EpilogueCall& call, const Tables& t, const at::Tensor& out) {
  const at::ScalarType dtype = t.mask_w.scalar_type();
  at::Tensor scale = t.mask_w, shift;
  if (call.bias.has_value()) shift = call.bias->to(dtype).unsqueeze(0) * (t.mask_b - t.mask_w);
  if (call.post_scale.has_value()) {
    const at::Tensor ps = call.post_scale->to(dtype).unsqueeze(0), pt = call.post_shift->to(dtype).unsqueeze(0);
    scale = scale * ps;
    shift = shift.defined() ? shift * ps + pt : pt.expand_as(scale);
  }
  scale = scale.contiguous();
  if (shift.defined()) shift = shift.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.src.scalar_type(), "wfkern_mask_epilogue_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    affine_forward<scalar_t, acc_t>(
        call.geometry, call.src.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), scale.data_ptr<acc_t>(),
        shift.defined() ? shift.data_ptr<acc_t>() : nullptr);
  });
}

at::Tensor mask_epilogue_cpu(const EpilogueCall& call, bool /*save_output: autograd's business*/) {
  const at::Tensor out = at::empty_like(call.src);
  write_epilogue(call, prepare(call), out);
  return call.like_y(out);
}

void mask_epilogue_inplace_cpu(const EpilogueCall& call) {
  write_epilogue(call, prepare(call), call.src);
  call.store_src_in_y();
}

Grads mask_epilogue_backward_cpu(const at::Tensor& grad, const EpilogueCall& call, bool saved_is_output,
                                 bool compute_grad_y) {
  const Tables t = prepare(call);
  const at::Tensor& src = call.src;
  // d out / d y = mask_w * post_scale
  const at::Tensor scale =
      (call.post_scale.has_value() ? t.mask_w * call.post_scale->to(t.mask_w.scalar_type()).unsqueeze(0) : t.mask_w)
          .contiguous();
  at::Tensor grad_y = compute_grad_y ? at::empty_like(src) : at::Tensor();
  at::Tensor sum_gx = at::empty_like(t.mask_w), sum_g = at::empty_like(t.mask_w);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "wfkern_mask_epilogue_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* xp = src.data_ptr<scalar_t>();
    const acc_t* a = scale.data_ptr<acc_t>();
    const Geometry& g = call.geometry;
    if (compute_grad_y) {
      affine_backward<true>(g, gp, xp, grad_y.data_ptr<scalar_t>(), a, sum_gx.data_ptr<acc_t>(), sum_g.data_ptr<acc_t>());
    } else {
      affine_backward<false>(g, gp, xp, static_cast<scalar_t*>(nullptr), a, sum_gx.data_ptr<acc_t>(), sum_g.data_ptr<acc_t>());
    }
  });
  auto [grad_aw, grad_ab] = alpha_grads_from_sums(sum_gx, sum_g, scale, t.mask_b_opt(), call, saved_is_output);
  grad_y = compute_grad_y ? call.like_y(grad_y) : at::empty({0}, call.y.options());
  return {grad_y, grad_aw, grad_ab};
}

}  // namespace

TORCH_LIBRARY_IMPL(wfkern, CPU, m) {
  m.impl("mask_epilogue", &forward_entry<mask_epilogue_cpu>);
  m.impl("mask_epilogue_", &inplace_entry<mask_epilogue_inplace_cpu>);
  m.impl("mask_epilogue_backward", &backward_entry<mask_epilogue_backward_cpu>);
}

}  // namespace wfkern
