"""Patching a classifier: WFModel, patch(), gates save/load, bake()."""
from wfkern.patch.bake import bake
from wfkern.patch.gates_io import (base_fingerprint, filters_layer_names, gates_layer_names, load_filters, load_gates,
                                   read_filters, read_gates, save_filters, save_gates)
from wfkern.patch.model import WFModel
from wfkern.patch.surgery import gates_mlp, patch

__all__ = ["WFModel", "bake", "base_fingerprint", "gates_layer_names", "gates_mlp", "load_gates", "patch", "read_gates",
           "save_gates",
           # wfkern 0.1's names, deprecated
           "filters_layer_names", "load_filters", "read_filters", "save_filters"]
