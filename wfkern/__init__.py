"""wfkern: class-level machine unlearning of image classifiers by weight filtering (WF-Net).

    wf = wfkern.patch(model, num_classes=10)   # wrap convs / attention qkv; freeze the base
    wf(x)                                      # the original model, exactly
    wf(x, forget=y)                            # sample b forgets class y[b] (-1: nothing)
    wfkern.save_gates(wf, "gates.safetensors")  # the learnt gates; wfkern.load_gates(wf, path) reads them
    wfkern.save_model(model, "m.safetensors", arch="torchvision:resnet18")   # any timm / torchvision model
"""
from wfkern.ops import backend, describe_backend, use_reference
from wfkern.patch import WFModel, bake, load_filters, load_gates, patch, save_gates
from wfkern.unlearn import UnlearnConfig, UnlearnDiverged, UnlearnResult, unlearn
from wfkern.metrics import EvalSettings, evaluate
from wfkern.data.loader import loader_options
from wfkern.models.importing import import_model
from wfkern.train.checkpoint import load_model
from wfkern.train.saving import save_model
from wfkern.train.precision import precision

__version__ = "0.1.0"

__all__ = [
    "EvalSettings",
    "UnlearnConfig",
    "UnlearnDiverged",
    "UnlearnResult",
    "WFModel",
    "__version__",
    "backend",
    "bake",
    "describe_backend",
    "evaluate",
    "import_model",
    "load_filters",  # deprecated: load_gates
    "load_gates",
    "load_model",
    "loader_options",
    "patch",
    "precision",
    "save_gates",
    "save_model",
    "unlearn",
    "use_reference",
]
