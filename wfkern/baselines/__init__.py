"""Single-class unlearning baselines (SPEC.md §4) and the cost record (wall time, storage) of every method."""

from .checkpoints import class_checkpoint, load_state, per_class_loader, save_state
from .runner import BASELINES, COST_FILE, read_cost, run_baseline, wf_cost
from .single_class import neg_grad, random_labels, retrain, subset_of

__all__ = [
    "BASELINES", "COST_FILE", "class_checkpoint", "load_state", "neg_grad", "per_class_loader", "random_labels",
    "read_cost", "retrain", "run_baseline", "save_state", "subset_of", "wf_cost",
]
