// Autograd of mask_epilogue, in C++: a Python-registered autograd rule costs hundreds of
// microseconds of interpreter time per call, and a patched model calls it once per WF layer.
// Forward and backward both go through the dispatcher, so tracing (torch.compile, AOTAutograd)
// sees mask_epilogue and mask_epilogue_backward as ops of their own.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace wfkern {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

using OptTensor = c10::optional<at::Tensor>;

at::Tensor call_forward(
    const at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels, const OptTensor& alpha_b,
    const OptTensor& bias, int64_t channel_dim, const OptTensor& post_scale, const OptTensor& post_shift,
    bool save_output) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wfkern::mask_epilogue", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const OptTensor&, const OptTensor&, int64_t, const OptTensor&,
                                               const OptTensor&, bool)>();
  return op.call(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift, save_output);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_backward(
    const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& alpha_w, const at::Tensor& labels,
    const OptTensor& alpha_b, const OptTensor& bias, int64_t channel_dim, const OptTensor& post_scale,
    const OptTensor& post_shift, bool saved_is_output, bool compute_grad_y) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wfkern::mask_epilogue_backward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                 const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const OptTensor&, const OptTensor&, int64_t, const OptTensor&, const OptTensor&,
                                 bool, bool)>();
  return op.call(grad_out, out, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift, saved_is_output,
                 compute_grad_y);
}

OptTensor optional_of(const at::Tensor& t) { return t.defined() ? OptTensor(t) : c10::nullopt; }

class MaskEpilogue : public torch::autograd::Function<MaskEpilogue> {
 public:
  // Input edges: y 0, alpha_w 1, labels 2, alpha_b 3 (only when given; bias comes with it).
  static at::Tensor forward(
      AutogradContext* ctx, const at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels,
      const OptTensor& alpha_b, const OptTensor& bias, int64_t channel_dim, const OptTensor& post_scale,
      const OptTensor& post_shift, bool save_output) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor out = call_forward(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift, save_output);
    ctx->save_for_backward({save_output ? out : y, alpha_w, labels, alpha_b.value_or(at::Tensor()),
                            bias.value_or(at::Tensor()), post_scale.value_or(at::Tensor()),
                            post_shift.value_or(at::Tensor())});
    ctx->saved_data["channel_dim"] = channel_dim;
    ctx->saved_data["save_output"] = save_output;
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const tensor_list saved = ctx->get_saved_variables();
    const at::Tensor &kept = saved[0], &alpha_w = saved[1], &labels = saved[2];
    const OptTensor alpha_b = optional_of(saved[3]);
    const bool need_y = ctx->needs_input_grad(0);
    const bool need_alpha_b = alpha_b.has_value() && ctx->needs_input_grad(3);
    at::Tensor grad_out = grad_outputs[0];
    if (!grad_out.defined()) grad_out = at::zeros_like(kept);
    auto [grad_y, grad_alpha_w, grad_alpha_b] = call_backward(
        grad_out, kept, alpha_w, labels, alpha_b, optional_of(saved[4]), ctx->saved_data["channel_dim"].toInt(),
        optional_of(saved[5]), optional_of(saved[6]), ctx->saved_data["save_output"].toBool(), need_y);
    // The base layer's bias and a folded BatchNorm's affine are frozen: no gradient by design.
    return {need_y ? grad_y : at::Tensor(), ctx->needs_input_grad(1) ? grad_alpha_w : at::Tensor(), at::Tensor(),
            need_alpha_b ? grad_alpha_b : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor mask_epilogue_autograd(
    const at::Tensor& y, const at::Tensor& alpha_w, const at::Tensor& labels, const OptTensor& alpha_b,
    const OptTensor& bias, int64_t channel_dim, const OptTensor& post_scale, const OptTensor& post_shift,
    bool save_output) {
  return MaskEpilogue::apply(y, alpha_w, labels, alpha_b, bias, channel_dim, post_scale, post_shift, save_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(wfkern, Autograd, m) {
  m.impl("mask_epilogue", &mask_epilogue_autograd);
}

}  // namespace wfkern
