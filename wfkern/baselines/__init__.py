"""Single-class unlearning baselines (docs/method.md §4, plus FT, SSD, SalUn, SCRUB and l1-sparse) and the cost record (wall time, storage) of
every method."""

from .checkpoints import class_checkpoint, load_state, per_class_loader, save_state
from .runner import BASELINES, COST_FILE, baseline_setting_problem, read_cost, run_baseline, wf_cost
from .l1_sparse import l1_norm, l1_schedule, l1_sparse
from .salun import saliency_mask, salun
from .scrub import distill_kl, scrub
from .single_class import fine_tune, neg_grad, random_labels, retrain, subset_of
from .ssd import default_alpha, fisher_diagonal, ssd, ssd_dampen

__all__ = [
    "BASELINES", "COST_FILE", "baseline_setting_problem", "class_checkpoint", "default_alpha", "fine_tune",
    "fisher_diagonal", "load_state", "neg_grad", "per_class_loader", "random_labels", "read_cost", "retrain",
    "run_baseline", "saliency_mask", "salun", "save_state", "ssd", "ssd_dampen", "subset_of", "wf_cost",
    "distill_kl", "l1_norm", "l1_schedule", "l1_sparse", "scrub",
]
