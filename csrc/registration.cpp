// Op schemas for the wfkern namespace. Implementations register per device in
// mask_epilogue_cpu.cpp and cuda/mask_epilogue.cu; fake and autograd rules live in
// wfkern/ops/mask_epilogue.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing wfkern._C only runs the static initialisers below (the extension-cpp pattern).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(wfkern, m) {
  // out = (y - bias) * sigmoid(alpha_w[labels]) + bias * sigmoid(alpha_b[labels]), per sample and channel.
  // y is the base layer's output *including* its bias; label -1 leaves a row untouched.
  m.def(
      "mask_epilogue(Tensor y, Tensor alpha_w, Tensor labels, Tensor? alpha_b=None, "
      "Tensor? bias=None, int channel_dim=1) -> Tensor");
  // In-place form for inference (no autograd): y is overwritten with the result, optionally
  // followed by a per-channel affine (a folded inference BatchNorm): out = out * post_scale + post_shift.
  m.def(
      "mask_epilogue_(Tensor(a!) y, Tensor alpha_w, Tensor labels, Tensor? alpha_b=None, "
      "Tensor? bias=None, int channel_dim=1, Tensor? post_scale=None, Tensor? post_shift=None) -> ()");
  // Returns (grad_y, grad_alpha_w, grad_alpha_b); grad_y is empty unless compute_grad_y,
  // grad_alpha_b is empty when alpha_b is None.
  m.def(
      "mask_epilogue_backward(Tensor grad_out, Tensor y, Tensor alpha_w, Tensor labels, "
      "Tensor? alpha_b, Tensor? bias, int channel_dim, bool compute_grad_y) -> (Tensor, Tensor, Tensor)");
}
