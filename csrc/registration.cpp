// Op schemas for the wfkern namespace. Implementations register per device in
// mask_epilogue_cpu.cpp and cuda/mask_epilogue.cu, the autograd kernel in
// mask_epilogue_autograd.cpp, each through the entries of epilogue_call.h (one EpilogueCall per
// call); the fake rules live in wfkern/ops/mask_epilogue.py.
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
  // out = ((y - bias) * sigmoid(alpha_w[labels]) + bias * sigmoid(alpha_b[labels])) * post_scale + post_shift,
  // per sample and channel. y is the base layer's output *including* its bias; label -1 leaves a
  // row untouched; the optional per-channel affine is a folded inference BatchNorm.
  // save_output chooses what the autograd backward keeps: the output (no extra memory when the
  // next layer saves it too and nothing modifies it in place, as in attention) or y (safe with an
  // in-place consumer such as ReLU(inplace=True)). The kernels ignore it.
  m.def(
      "mask_epilogue(Tensor y, Tensor alpha_w, Tensor labels, Tensor? alpha_b=None, "
      "Tensor? bias=None, int channel_dim=1, Tensor? post_scale=None, Tensor? post_shift=None, "
      "bool save_output=False) -> Tensor");
  // In-place form for inference (no autograd): y is overwritten with the result.
  m.def(
      "mask_epilogue_(Tensor(a!) y, Tensor alpha_w, Tensor labels, Tensor? alpha_b=None, "
      "Tensor? bias=None, int channel_dim=1, Tensor? post_scale=None, Tensor? post_shift=None) -> ()");
  // Backward from what the forward saved: y, or its output when saved_is_output. Returns
  // (grad_y, grad_alpha_w, grad_alpha_b); grad_y is empty unless compute_grad_y, grad_alpha_b is
  // empty when alpha_b is None.
  m.def(
      "mask_epilogue_backward(Tensor grad_out, Tensor saved, Tensor alpha_w, Tensor labels, "
      "Tensor? alpha_b, Tensor? bias, int channel_dim, Tensor? post_scale, Tensor? post_shift, "
      "bool saved_is_output, bool compute_grad_y) -> (Tensor, Tensor, Tensor)");
  // Reads (and clears) the first label outside [-1, num_classes) that a CUDA kernel found since the
  // last call: (found, label, num_classes). Those kernels never synchronise with the host to check.
  m.def("take_label_error() -> int[]");
}
