"""Taking the forgetting model out of Python: baked plain weights, ONNX with a forget input, an AOTInductor package.

    src = wfkern.export.load_source("model.safetensors", "gates.safetensors")
    wfkern.export.export_weights(src, [3, 7], "forget_3_7.safetensors")   # torchvision / timm load it as is
    wfkern.export.export_onnx(src, "wf.onnx")                             # onnxruntime: logits = f(input, forget)
    wfkern.export.export_pt2(src, "wf.pt2")                               # torch._inductor.aoti_load_package

See docs/export.md.
"""
from wfkern.export.forget_input import ForgetInput
from wfkern.export.source import EXPORT_FORMAT, ExportSource, class_names, load_source
from wfkern.export.writers import (FORGET_INPUTS, custom_ops, example_inputs, export_onnx, export_program, export_pt2,
                                   export_weights)

__all__ = ["EXPORT_FORMAT", "FORGET_INPUTS", "ExportSource", "ForgetInput", "class_names", "custom_ops",
           "example_inputs", "export_onnx", "export_program", "export_pt2", "export_weights", "load_source"]
