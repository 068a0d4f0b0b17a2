"""Settings of an evaluation run (every metric's knobs, with the paper's defaults), each default written once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from wfkern._utils import replace_settings, setting

__all__ = ["EvalSettings", "ALL_METRICS", "OPT_IN_METRICS", "INSDEL_ORDERS", "RETAIN_FT_PARTS"]

ALL_METRICS = ("acc", "zrf", "mia", "rt", "insdel", "probe", "retain_ft", "mia_eff")
OPT_IN_METRICS = ("probe", "retain_ft", "mia_eff")  # computed only when named in ``metrics``
INSDEL_ORDERS = ("relevance", "random")
RETAIN_FT_PARTS = ("all", "head")


def _metric_list(text: str) -> Optional[tuple[str, ...]]:
    """``"acc, zrf"`` -> ("acc", "zrf"); an empty text -> None (every metric the inputs allow)."""
    return tuple(m.strip() for m in text.split(",") if m.strip()) if text else None


def _layer_list(text: str) -> tuple[str, ...]:
    """``"head, features.2"`` -> ("head", "features.2"); an empty text -> ("head",)."""
    return tuple(m.strip() for m in text.split(",") if m.strip()) or ("head",)


@dataclass
class EvalSettings:
    """Knobs of ``wfkern.evaluate``; ``as_dict()`` is stored with the results and checked on resume.

    Each field's default and help are written here, once; ``wfkern evaluate`` makes a flag of each
    (``--rt-max-epochs`` for ``rt_max_epochs``) and ``evaluate(..., **overrides)`` replaces fields by name.
    """

    metrics: Optional[tuple[str, ...]] = setting(
        None, f"metrics to compute, a comma list from {','.join(ALL_METRICS)}",
        none=f"every metric the inputs allow but {', '.join(OPT_IN_METRICS)}",
        parse=_metric_list, metavar="LIST")
    seed: int = setting(0, "base seed of the evaluation (random-init model, MIA subsampling, relearn draws); "
                           "each class's seed derives from it")
    batch_size: int = setting(256, "inference batch size")
    zrf_seed: int = setting(0, "seed of ZRF's randomly initialised reference model")
    mia_max_samples: int = setting(2000, "cap on the members, non-members and targets fed to the attacker")
    rt_samples: int = setting(500, "fresh training samples per relearn epoch")
    rt_lr: float = setting(1e-3, "Adam learning rate of relearning")
    rt_batch_size: int = setting(128, "relearn batch size")
    rt_max_epochs: int = setting(100, "relearn cap, in epochs")
    rt_target: float = setting(0.95, "fraction of the original's accuracy on the class that relearning must reach")
    insdel_steps: int = setting(20, "resolution of the insertion/deletion curves: steps + 1 points")
    insdel_order: str = setting("relevance", "filter order of insertion/deletion: relevance (the metric) or random "
                                             "(a control)", choices=INSDEL_ORDERS)
    probe_layers: tuple[str, ...] = setting(
        ("head",), "probe: layers whose features the linear probe reads, a comma list of 'head' (the input of the "
                   "classification head), NAME (a module's output) or NAME:in (its input); the first is the summary's",
        parse=_layer_list, metavar="LIST")
    probe_max_samples: int = setting(2000, "probe: training samples (all classes, seeded draw) the probe is fitted on")
    probe_max_iter: int = setting(300, "probe: lbfgs iterations of the logistic regression (a fixed budget)")
    probe_inv_reg: float = setting(1.0, "probe: inverse L2 regularisation C of the logistic regression")
    rft_part: str = setting("all", "retain_ft: which weights fine-tune: all, or the classification head only",
                            choices=RETAIN_FT_PARTS)
    rft_epochs: int = setting(10, "retain_ft: epochs of fine-tuning on retain-class samples (a fixed budget)")
    rft_samples: int = setting(500, "retain_ft: fresh retain-class training samples per epoch")
    rft_lr: float = setting(1e-3, "retain_ft: Adam learning rate")
    rft_batch_size: int = setting(128, "retain_ft: batch size")
    test_per_class: Optional[int] = setting(
        None, "keep this many test samples per class, seeded; the paper's ImageNet protocol uses 5",
        none="all", metavar="N")
    extra: dict = field(default_factory=dict, metadata={"flag": False, "help": "free-form notes kept with the results"})

    def replace(self, **overrides) -> "EvalSettings":
        """A copy with some fields replaced; an unknown name is a TypeError that lists the settings."""
        return replace_settings(self, "evaluate", **overrides)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = list(self.metrics) if self.metrics is not None else None
        d["probe_layers"] = list(self.probe_layers)
        return d
