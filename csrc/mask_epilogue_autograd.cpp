// Autograd of mask_epilogue, in C++: a Python-registered autograd rule costs hundreds of
// microseconds of interpreter time per call, and a patched model calls it once per WF layer.
// Forward and backward both go through the dispatcher, so tracing (torch.compile, AOTAutograd)
// sees mask_epilogue and mask_epilogue_backward as ops of their own. The call is passed on as
// given: the kernels (or fake rules) below check it.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "epilogue_call.h"

namespace wfkern {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

at::Tensor redispatch_forward(const EpilogueCall& c, bool save_output) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("wfkern::mask_epilogue", "").typed<ForwardOp>();
  return op.call(c.y, c.alpha_w, c.labels, c.alpha_b, c.bias, c.channel_dim, c.post_scale, c.post_shift, save_output);
}

// c.y is what the forward saved: y, or its output when saved_is_output.
Grads redispatch_backward(const at::Tensor& grad_out, const EpilogueCall& c, bool saved_is_output, bool compute_grad_y) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("wfkern::mask_epilogue_backward", "").typed<BackwardOp>();
  return op.call(grad_out, c.y, c.alpha_w, c.labels, c.alpha_b, c.bias, c.channel_dim, c.post_scale, c.post_shift,
                 saved_is_output, compute_grad_y);
}

OptTensor optional_of(const at::Tensor& t) { return t.defined() ? OptTensor(t) : c10::nullopt; }

// Keeps the call for the backward with `kept` (y or the output) in place of y.
void save_call(AutogradContext* ctx, const EpilogueCall& c, const at::Tensor& kept, bool save_output) {
  ctx->save_for_backward({kept, c.alpha_w, c.labels, c.alpha_b.value_or(at::Tensor()), c.bias.value_or(at::Tensor()),
                          c.post_scale.value_or(at::Tensor()), c.post_shift.value_or(at::Tensor())});
  ctx->saved_data["channel_dim"] = c.channel_dim;
  ctx->saved_data["save_output"] = save_output;
}

EpilogueCall saved_call(AutogradContext* ctx) {
  const tensor_list s = ctx->get_saved_variables();
  return EpilogueCall{s[0], s[1], s[2], optional_of(s[3]), optional_of(s[4]), ctx->saved_data["channel_dim"].toInt(),
                      optional_of(s[5]), optional_of(s[6])};
}

class MaskEpilogue : public torch::autograd::Function<MaskEpilogue> {
 public:
  // Input edges: the call's differentiable tensors, y 0, alpha_w 1, alpha_b 2 (only when given).
  // The base layer's bias and a folded BatchNorm's affine are frozen: no gradient by design.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& /*alpha_w*/,
                            const OptTensor& /*alpha_b*/, const EpilogueCall& call, bool save_output) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor out = redispatch_forward(call, save_output);
    save_call(ctx, call, save_output ? out : y, save_output);
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const EpilogueCall kept = saved_call(ctx);
    const bool need_y = ctx->needs_input_grad(0);
    const bool need_alpha_b = kept.alpha_b.has_value() && ctx->needs_input_grad(2);
    at::Tensor grad_out = grad_outputs[0];
    if (!grad_out.defined()) grad_out = at::zeros_like(kept.y);
    auto [grad_y, grad_alpha_w, grad_alpha_b] =
        redispatch_backward(grad_out, kept, ctx->saved_data["save_output"].toBool(), need_y);
    return {need_y ? grad_y : at::Tensor(), ctx->needs_input_grad(1) ? grad_alpha_w : at::Tensor(),
            need_alpha_b ? grad_alpha_b : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor mask_epilogue_autograd(const EpilogueCall& call, bool save_output) {
  return MaskEpilogue::apply(call.y, call.alpha_w, call.alpha_b, call, save_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(wfkern, Autograd, m) {
  m.impl("mask_epilogue", &forward_entry<mask_epilogue_autograd, /*kCheck=*/false>);
}

}  // namespace wfkern
