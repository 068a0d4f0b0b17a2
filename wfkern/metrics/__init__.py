"""Unlearning metrics (docs/method.md §3): Acc_f/Acc_r, ZRF, relearn time, membership inference, insertion/deletion,
filter-class relations, the depth of forgetting (linear probe, retain-set fine-tuning recovery, MIA-efficacy), and the
resumable ``evaluate`` that runs them per class."""

from .accuracy import accuracy, accuracy_split
from .classes import select_classes
from .divergence import js_divergence, zrf_score
from .evaluate import RESULTS_FILE, evaluate, summarize
from .insertion import alpha_masks, insertion_deletion, relevance_order
from .mia import mia_attack, mia_features
from .mia_efficacy import efficacy_features, mia_efficacy, prob_entropy
from .probe import class_probe, head_name, probe_accuracy, probe_features
from .providers import OriginalModel, PerClassModels, Unlearned, WFUnlearned, as_unlearned, is_wf_model
from .random_init import random_init_like
from .relations import default_relations_layer, filter_class_relations
from .recovery import retain_finetune, retain_recovery
from .relearn import relearn_time
from .settings import ALL_METRICS, EvalSettings

__all__ = [
    "ALL_METRICS", "EvalSettings", "OriginalModel", "PerClassModels", "RESULTS_FILE", "Unlearned", "WFUnlearned",
    "accuracy", "accuracy_split", "alpha_masks", "as_unlearned", "default_relations_layer", "evaluate",
    "filter_class_relations", "insertion_deletion", "is_wf_model", "js_divergence", "mia_attack", "mia_features",
    "random_init_like", "relearn_time", "relevance_order", "select_classes", "summarize", "zrf_score",
    "efficacy_features", "mia_efficacy", "prob_entropy", "class_probe", "head_name", "probe_accuracy",
    "probe_features", "retain_finetune", "retain_recovery",
]
