"""Patching a classifier: WFModel, patch(), filters save/load, bake()."""
from wfkern.patch.bake import bake
from wfkern.patch.filters_io import base_fingerprint, filters_layer_names, load_filters, read_filters, save_filters
from wfkern.patch.model import WFModel
from wfkern.patch.surgery import gates_mlp, patch

__all__ = ["WFModel", "bake", "base_fingerprint", "filters_layer_names", "gates_mlp", "load_filters", "patch",
           "read_filters", "save_filters"]
