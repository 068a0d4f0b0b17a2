"""All metrics of one forgotten class ``c`` (docs/method.md §3), given what the whole run shares."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

from wfkern._utils import SEED_SPREAD, SEED_STRIDE

from ._data import class_indices, index_batches, predict_logits
from .accuracy import accuracy, accuracy_split
from .divergence import zrf_score
from .insertion import insertion_deletion
from .mia import mia_attack, mia_features
from .mia_efficacy import efficacy_features, mia_efficacy
from .probe import class_probe
from .recovery import retain_recovery
from .providers import Unlearned
from .relearn import relearn_time
from .settings import EvalSettings

__all__ = ["EvalContext", "evaluate_class", "class_seed"]

logger = logging.getLogger("wfkern.metrics")


@dataclass
class EvalContext:
    """What every class shares: the data, their labels, and the original and random models' test outputs.

    Attributes:
        test_data / train_data: datasets yielding ``(x, y)``; ``train_data`` may be None (no MIA, no RT).
        test_labels / train_labels: (N,) int64.
        orig_logits: (N_test, Nc) float32 logits of the original model on the test set.
        random_probs: (N_test, Nc) float64 softmax of the random-init model on the test set (or None).
        device: where inputs go.
    """

    test_data: Dataset
    test_labels: Tensor
    train_data: Optional[Dataset]
    train_labels: Optional[Tensor]
    orig_logits: Tensor
    random_probs: Optional[Tensor]
    device: torch.device


def class_seed(seed: int, c: int) -> int:
    """Per-class seed, so each class's result does not depend on which classes ran before it."""
    return int(seed) * SEED_STRIDE + SEED_SPREAD * (int(c) + 1)


def _sample(indices: Tensor, n: int, gen: torch.Generator) -> Tensor:
    if indices.numel() <= n:
        return indices
    return indices[torch.randperm(indices.numel(), generator=gen)[:n]]


def _mia_logits(um: Unlearned, c: int, ctx: EvalContext, s: EvalSettings, seed: int) -> dict:
    """{group: (logits, labels)} of the attack groups: members (retain-class training samples), targets (class-c
    training samples), non-members (retain-class test samples), each a seeded draw of at most mia_max_samples."""
    gen = torch.Generator().manual_seed(seed)
    fn = lambda x: um.logits(x, c)  # noqa: E731
    groups = {
        "member": (ctx.train_data, _sample(class_indices(ctx.train_labels, c, exclude=True), s.mia_max_samples, gen)),
        "target": (ctx.train_data, _sample(class_indices(ctx.train_labels, c), s.mia_max_samples, gen)),
        "nonmember": (ctx.test_data, _sample(class_indices(ctx.test_labels, c, exclude=True), s.mia_max_samples, gen)),
    }
    out = {}
    for name, (data, idx) in groups.items():
        logits, labels = predict_logits(fn, data, idx, batch_size=s.batch_size, device=ctx.device)
        out[name] = (logits.reshape(len(idx), um.num_classes), labels)
    return out


def _mia(um: Unlearned, c: int, ctx: EvalContext, s: EvalSettings, seed: int, metrics: set) -> dict:
    groups = _mia_logits(um, c, ctx, s, seed)
    out: dict = {}
    if "mia" in metrics:
        feats = {k: mia_features(*v) for k, v in groups.items()}
        out.update(mia_attack(feats["member"], feats["nonmember"], feats["target"], seed=seed))
    if "mia_eff" in metrics:
        feats = {k: efficacy_features(*v) for k, v in groups.items()}
        out.update(mia_efficacy(feats["member"], feats["nonmember"], feats["target"], seed=seed))
    return out


def _stack_inputs(dataset: Dataset, indices: Tensor, device: torch.device) -> Tensor:
    return torch.cat([x for x, _ in index_batches(dataset, indices, 256)]).to(device)


@torch.no_grad()
def _forward_metrics(um: Unlearned, c: int, ctx: EvalContext, s: EvalSettings, metrics: set) -> dict:
    out: dict = {}
    logits, _ = predict_logits(lambda x: um.logits(x, c), ctx.test_data, None,
                               batch_size=s.batch_size, device=ctx.device)
    acc_f, acc_r = accuracy_split(logits.argmax(dim=1), ctx.test_labels, c)
    out.update(acc_f=acc_f, acc_r=acc_r)
    bad = int((~torch.isfinite(logits.reshape(logits.shape[0], -1))).any(dim=1).sum())
    if bad:  # a diverged model (NaN / inf weights): what it answers is counted, nothing else can be measured
        out["non_finite_outputs"] = bad
    if "zrf" in metrics and ctx.random_probs is not None:
        idx = class_indices(ctx.test_labels, c)
        out["zrf"] = zrf_score(torch.softmax(logits[idx].double(), dim=1), ctx.random_probs[idx])
    return out


def evaluate_class(um: Unlearned, c: int, ctx: EvalContext, s: EvalSettings, metrics: set, *,
                   progress: bool = True) -> dict:
    """Every requested metric of the model unlearned on class ``c``.

    Args:
        um: the unlearned-model family.
        c: the forgotten class.
        ctx: shared data and reference outputs.
        s: settings.
        metrics: subset of ``ALL_METRICS`` ("acc" always runs).
        progress: tqdm bar for the relearn epochs.
    Returns:
        A JSON-able dict: ``class, n_forget_test, orig_acc, orig_acc_r, acc_f, acc_r`` and, when requested, ``zrf``;
        ``mia, mia_prob, attack_acc``; ``rt, rt_capped, rt_target``; ``insertion_auc, deletion_auc`` and
        ``insdel`` (the curves); ``probe_acc_f, probe_acc_r, probe`` (``probe.class_probe``); ``rft_acc_f,
        rft_acc_r, rft_history`` (``recovery.retain_recovery``); ``mia_eff, mia_eff_entropy, mia_eff_m_entropy``
        (``mia_efficacy``); plus ``seconds``. Accuracies and ZRF are fractions in [0, 1]. A model whose test outputs
        are not all finite (a diverged baseline) gets its accuracies and ``non_finite_outputs`` (the count of such
        test samples) only: no attack, probe or fine-tuning can be measured on NaN outputs.
    """
    t0 = time.perf_counter()
    seed = class_seed(s.seed, c)
    idx_c = class_indices(ctx.test_labels, c)
    orig_pred = ctx.orig_logits.argmax(dim=1)
    # The original on the same two sets: Acc_r is judged against orig_acc_r, the accuracy the retain set allows.
    orig_acc, orig_acc_r = accuracy_split(orig_pred, ctx.test_labels, c)
    out: dict = {"class": int(c), "n_forget_test": int(idx_c.numel()), "orig_acc": orig_acc, "orig_acc_r": orig_acc_r}
    um.set_eval()
    out.update(_forward_metrics(um, c, ctx, s, metrics))
    if out.get("non_finite_outputs"):
        logger.warning("wfkern.evaluate: the %s model of class %d gives non-finite outputs on %d of %d test samples "
                       "(it diverged); only its accuracies are recorded for this class", um.method, c,
                       out["non_finite_outputs"], len(ctx.test_labels))
        out["seconds"] = time.perf_counter() - t0
        return out
    if metrics & {"mia", "mia_eff"} and ctx.train_data is not None:
        out.update(_mia(um, c, ctx, s, seed, metrics))
    if "probe" in metrics and ctx.train_data is not None:
        out.update(class_probe(um, c, ctx.train_data, ctx.train_labels, ctx.test_data, ctx.test_labels, s, seed,
                               ctx.device))
    if "retain_ft" in metrics and ctx.train_data is not None and idx_c.numel() > 0:
        module = um.plain_model(c)
        if module is not None:
            res = retain_recovery(module, ctx.train_data, ctx.train_labels, ctx.test_data, ctx.test_labels, c,
                                  um.num_classes, eval_batch_size=s.batch_size, progress=progress, part=s.rft_part,
                                  epochs=s.rft_epochs, samples_per_epoch=s.rft_samples, lr=s.rft_lr,
                                  batch_size=s.rft_batch_size, seed=seed, device=ctx.device)
            out.update(rft_acc_f=res["acc_f"], rft_acc_r=res["acc_r"], rft_history=res["history"])
    if "rt" in metrics and ctx.train_data is not None and idx_c.numel() > 0:
        module = um.relearn_model(c)
        if module is not None:
            target = s.rt_target * orig_acc
            res = relearn_time(module, ctx.train_data, ctx.test_data, idx_c, c, target,
                               samples_per_epoch=s.rt_samples, lr=s.rt_lr, batch_size=s.rt_batch_size,
                               max_epochs=s.rt_max_epochs, seed=seed, device=ctx.device, progress=progress)
            out.update(rt=res["rt"], rt_capped=res["capped"], rt_target=target, rt_history=res["acc_history"])
    if "insdel" in metrics and um.wf is not None and idx_c.numel() > 0:
        x = _stack_inputs(ctx.test_data, idx_c, ctx.device)
        conf = float(torch.softmax(ctx.orig_logits[idx_c].double(), dim=1)[:, c].mean())
        res = insertion_deletion(um.wf, x, c, steps=s.insdel_steps, order=s.insdel_order, seed=seed,
                                 batch_size=s.batch_size, original_conf=conf)
        out.update(insertion_auc=res["insertion_auc"], deletion_auc=res["deletion_auc"],
                   insdel={k: res[k] for k in ("k", "insertion_curve", "deletion_curve")})
    out["seconds"] = time.perf_counter() - t0
    return out
