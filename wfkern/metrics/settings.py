"""Settings of an evaluation run (every metric's knobs, with the paper's defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

__all__ = ["EvalSettings", "ALL_METRICS"]

ALL_METRICS = ("acc", "zrf", "mia", "rt", "insdel")


@dataclass
class EvalSettings:
    """Knobs of ``wfkern.evaluate``; ``as_dict()`` is stored with the results and checked on resume.

    Attributes:
        metrics: subset of ``ALL_METRICS``; None = every metric the inputs allow.
        seed: base seed (random-init model, MIA subsampling, relearn draws); per class ``seed`` + class offset.
        batch_size: inference batch size.
        zrf_seed: seed of the randomly initialised reference model.
        mia_max_samples: cap on members, non-members and targets fed to the attacker.
        rt_samples: fresh training samples per relearn epoch (500).
        rt_lr: Adam learning rate of relearning (1e-3).
        rt_batch_size: relearn batch size (128).
        rt_max_epochs: relearn cap (100).
        rt_target: fraction of the original's accuracy on the class to reach (0.95).
        insdel_steps: insertion/deletion curve resolution (steps + 1 points).
        insdel_order: "relevance" (the metric) or "random" (a control).
        test_per_class: keep only this many test samples per class (seeded; the paper's ImageNet protocol
            uses 5); None keeps all.
    """

    metrics: Optional[tuple[str, ...]] = None
    seed: int = 0
    batch_size: int = 256
    zrf_seed: int = 0
    mia_max_samples: int = 2000
    rt_samples: int = 500
    rt_lr: float = 1e-3
    rt_batch_size: int = 128
    rt_max_epochs: int = 100
    rt_target: float = 0.95
    insdel_steps: int = 20
    insdel_order: str = "relevance"
    test_per_class: Optional[int] = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = list(self.metrics) if self.metrics is not None else None
        return d
