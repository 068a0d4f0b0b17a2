// How a kernel walks an activation: (B, C, S) planes or (B, S, C) rows, without copies where the
// memory format allows (NCHW, channels_last, (B, N, F)); and the dtype of the per-sample tables.
#pragma once
#include <ATen/ATen.h>

namespace wfkern {

// Where the channel sits in memory once the non-batch, non-channel dims are collapsed to S.
enum class Layout {
  Planes,  // (B, C, S), S innermost: contiguous NCHW
  Rows,    // (B, S, C), C innermost: channels_last, or (B, N, F)
};

struct Geometry {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t spatial = 0;
  Layout layout = Layout::Planes;
};

// Returns true and sets *layout when t can be walked as Planes or Rows without a copy.
inline bool classify_layout(const at::Tensor& t, int64_t cd, Layout* layout) {
  const int64_t dim = t.dim();
  if (cd == dim - 1 && t.is_contiguous()) {
    *layout = Layout::Rows;
    return true;
  }
  if (cd == 1 && t.is_contiguous()) {
    *layout = Layout::Planes;
    return true;
  }
  if (cd == 1 && ((dim == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast)) ||
                  (dim == 5 && t.is_contiguous(at::MemoryFormat::ChannelsLast3d)))) {
    *layout = Layout::Rows;
    return true;
  }
  return false;
}

// t itself when its layout is walkable, else a contiguous copy; fills geometry.
inline at::Tensor walkable(const at::Tensor& t, int64_t cd, Geometry* g) {
  at::Tensor out = t;
  if (!classify_layout(t, cd, &g->layout)) {
    out = t.contiguous();
    TORCH_INTERNAL_ASSERT(classify_layout(out, cd, &g->layout));
  }
  g->batch = t.size(0);
  g->channels = t.size(cd);
  g->spatial = g->batch * g->channels == 0 ? 0 : t.numel() / (g->batch * g->channels);
  return out;
}

// `like` itself when it has the same strides as `ref`, else a copy with ref's strides.
inline at::Tensor with_strides_of(const at::Tensor& like, const at::Tensor& ref) {
  if (like.strides() == ref.strides()) {
    return like;
  }
  at::Tensor out = at::empty_like(ref, like.options());
  out.copy_(like);
  return out;
}

// Results are computed in src's layout; give them y's strides (what empty_like(y) has) when
// src is a copy of y. Keeps the fake implementation a plain empty_like(y).
inline at::Tensor like_input(const at::Tensor& result, const at::Tensor& src, const at::Tensor& y) {
  if (src.is_same(y)) {
    return result;
  }
  return at::empty_like(y).copy_(result);
}

// Math type of the mask tables: float64 for float64 inputs (gradcheck), else float32.
inline at::ScalarType table_dtype(const at::Tensor& y) {
  return y.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace wfkern
