"""wfkern's ops: compiled kernels when wfkern._C is built, the pure-PyTorch reference otherwise."""
from wfkern.ops import _load
from wfkern.ops._load import backend, describe_backend, is_reference_forced, set_force_reference, use_reference
from wfkern.ops.mask_epilogue import _register as _register_mask_epilogue
from wfkern.ops.mask_epilogue import mask_epilogue, mask_epilogue_, raise_label_errors
from wfkern.ops.gated_linear import gated_linear, gated_linear_ref
from wfkern.ops.labels import checked_labels
from wfkern.ops.reference import EpilogueCall, check_label_values, gate_table_ref, mask_epilogue_ref

if _load.loaded():
    _register_mask_epilogue()

__all__ = [
    "EpilogueCall",
    "backend",
    "check_label_values",
    "checked_labels",
    "describe_backend",
    "gate_table_ref",
    "gated_linear",
    "gated_linear_ref",
    "is_reference_forced",
    "mask_epilogue",
    "mask_epilogue_",
    "mask_epilogue_ref",
    "raise_label_errors",
    "set_force_reference",
    "use_reference",
]
