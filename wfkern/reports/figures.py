"""PNG figures (matplotlib, Agg backend): per-class accuracy bars, insertion/deletion curves, filter-class relations."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wfkern._atomic import atomic_write  # noqa: E402

from .tables import method_label, ordered  # noqa: E402

__all__ = ["plot_per_class_accuracy", "plot_insertion_deletion", "plot_relations", "plot_untraining",
           "RELATIONS_EXPLANATION", "relations_explanation"]


def _row(result: dict, c: int) -> dict:
    pc = result["per_class"]
    return pc[c] if c in pc else pc[str(c)]


def _names(result: dict, classes: Optional[Sequence[int]] = None) -> list[str]:
    names = result.get("class_names") or []
    return [names[c] if c < len(names) else str(c) for c in (result["classes"] if classes is None else classes)]


def _label(method: str, result: Optional[dict] = None) -> str:
    return method_label(method, result).strip("*")


def _save(fig, path: Path) -> Path:
    """Write the PNG atomically (a reader never sees half a figure) and free the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(str(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def plot_per_class_accuracy(results: dict, path: str | Path) -> Path:
    """One panel per method: Acc_r and Acc_f bars per forgotten class, the original's class accuracy as a dot.

    Args:
        results: method -> ``wfkern.evaluate`` result.
        path: the PNG to write.
    """
    methods = [m for m in ordered(results) if m != "original"] or ordered(results)
    # One x position per class any method evaluated (a method without a class leaves a gap, never a crash).
    classes = sorted({int(c) for m in methods for c in results[m]["classes"]})
    pos = {c: i for i, c in enumerate(classes)}
    n = len(classes)
    fig, axes = plt.subplots(len(methods), 1, figsize=(max(6.0, 0.55 * n + 2.5), 2.6 * len(methods) + 0.6),
                             squeeze=False, sharex=True)
    for ax, m in zip(axes[:, 0], methods):
        res = results[m]
        x = np.asarray([pos[int(c)] for c in res["classes"]], dtype=float)
        rows = [_row(res, c) for c in res["classes"]]
        acc_r = [100 * (r.get("acc_r") or 0) for r in rows]
        acc_f = [100 * (r.get("acc_f") or 0) for r in rows]
        ax.bar(x - 0.2, acc_r, 0.4, label="Acc_r (other classes)", color="#4C72B0")
        ax.bar(x + 0.2, acc_f, 0.4, label="Acc_f (forgotten class)", color="#DD8452")
        for xi, v in zip(x, acc_f):  # a 0% bar is invisible: print the value
            ax.text(xi + 0.2, v + 1.5, f"{v:.0f}", ha="center", va="bottom", fontsize=7, color="#8c4a1c")
        ax.plot(x, [100 * (r.get("orig_acc") or 0) for r in rows], "k.", markersize=8,
                label="original model, this class")
        ax.set_ylim(0, 105)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{_label(m, res)}: accuracy with each class forgotten")
        ax.grid(axis="y", alpha=0.3)
    named = next((results[m] for m in methods if results[m].get("class_names")), results[methods[0]])
    axes[-1, 0].set_xticks(np.arange(n), _names(named, classes), rotation=45 if n > 12 else 0,
                           ha="right" if n > 12 else "center")
    axes[-1, 0].set_xlabel("forgotten class")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, Path(path))


def plot_insertion_deletion(result: dict, path: str | Path, method: str = "wfnet") -> Path:
    """Insertion and deletion curves: every class (thin) and the mean (bold), the mean AUC in the legend.

    Args:
        result: a ``wfkern.evaluate`` result with ``insdel`` curves.
        path: the PNG to write.
        method: name for the title.
    """
    rows = [_row(result, c) for c in result["classes"] if _row(result, c).get("insdel")]
    if not rows:
        raise ValueError(f"wfkern.plot_insertion_deletion: result must hold insertion/deletion curves, got none for {method!r}")
    k = np.asarray(rows[0]["insdel"]["k"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    names = _names(result)
    for ax, key, auc_key, title, verb in (
            (axes[0], "insertion_curve", "insertion_auc", "Insertion (↑): re-open the most relevant gates", "re-opened"),
            (axes[1], "deletion_curve", "deletion_auc", "Deletion (↓): close the most relevant gates", "closed")):
        curves = np.asarray([r["insdel"][key] for r in rows], dtype=float)
        cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "viridis")
        for i, curve in enumerate(curves):
            ax.plot(k, curve, color=cmap(i / max(1, len(rows) - 1) if len(rows) > 10 else i), lw=0.9, alpha=0.55,
                    label=f"class {names[i]}" if len(rows) <= 10 else None)
        mean_auc = float(np.mean([r[auc_key] for r in rows]))
        (mean_line,) = ax.plot(k, np.nanmean(curves, axis=0), "k-", lw=2.4, label=f"mean (AUC {mean_auc:.2f})")
        if ax is axes[0]:
            ax.legend(handles=[mean_line], fontsize=8, loc="lower right")
        ax.set_xlabel(f"fraction k of gates {verb} in every layer")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("true-class confidence / original model's")
    axes[1].legend(fontsize=7, loc="upper right", ncol=2)
    fig.suptitle(f"{_label(method, result)}: insertion and deletion on the alpha masks", fontsize=11)
    return _save(fig, Path(path))


RELATIONS_EXPLANATION = (
    "Each row is a forgotten class; each column a filter of layer {layer} that is in the top {k} of at least {m} "
    "classes, ranked by relevance 1 − σ(α) (how far forgetting the class closes the filter's gate); a coloured "
    "cell means the filter is in that row's top {k}. Shared filters are features the classes have in common.")


def relations_explanation(relations: dict) -> str:
    """The one-line explanation of the filter–class figure for these relations (layer, k, sharing threshold),
    with what it found: how many filters are shared, or that none is."""
    k, m = relations.get("top_k", 10), relations.get("min_classes", 2)
    text = RELATIONS_EXPLANATION.format(layer=relations["layer"], k=k, m=m)
    n = len(relations["filters"])
    if n == 0:
        text += f" Here no filter is in the top {k} of {m} classes in this layer: every class relies on its own."
    else:
        text += f" Here {n} filter{'s are' if n != 1 else ' is'} shared."
    note = relations.get("layer_note")
    return f"{text} {note}" if note else text


def plot_relations(relations: dict, path: str | Path, class_names: Optional[Sequence[str]] = None) -> Path:
    """Classes x shared filters: relevance ``1 - sigmoid(alpha)`` where the filter is in the class's top-k.

    Cells of filters outside a class's top-k are light grey (not blank), every row says how many of the shown
    filters are in its top-k, and when no filter is shared the figure says so in words and lists each class's
    own top filters instead of drawing an empty grid.

    Args:
        relations: ``wfkern.metrics.filter_class_relations`` output.
        path: the PNG to write.
        class_names: names by class index.
    """
    classes, filters = relations["classes"], relations["filters"]
    k, min_classes, layer = relations.get("top_k", 10), relations.get("min_classes", 2), relations["layer"]
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    member = np.asarray(relations["member"], dtype=bool).reshape(len(classes), len(filters))
    rel = np.asarray(relations["relevance"], dtype=float).reshape(len(classes), len(filters))
    if not filters:
        top = relations.get("top") or {}
        lines = [f"No filter is in the top-{k} of {min_classes} classes in layer {layer}:",
                 "every class relies on its own filters. Each class's top filters:", ""]
        for c, name in zip(classes, names):
            own = top.get(c, top.get(str(c)))
            lines.append(f"class {name}: " + (" ".join(f"#{j}" for j in own) if own else "–"))
        shown = lines[:3 + 24] + ([f"… ({len(classes) - 24} more classes)"] if len(classes) > 24 else [])
        fig, ax = plt.subplots(figsize=(7.5, 0.26 * len(shown) + 0.9))
        ax.axis("off")
        ax.text(0.0, 1.0, "\n".join(shown), ha="left", va="top", family="monospace", fontsize=8,
                transform=ax.transAxes)
        ax.set_title(f"Filter–class relations, layer {layer}: no shared filter", fontsize=10, loc="left")
        return _save(fig, Path(path))
    grid = np.where(member, rel, np.nan)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.32 * len(filters) + 3.5), max(3.0, 0.35 * len(classes) + 1.8)))
    vmax = float(np.nanmax(grid)) if np.isfinite(grid).any() else 1.0
    # not in this class's top filters: grey, so a sparse row does not look empty
    cmap = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=0.0, vmax=max(vmax, 1e-6),
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label=f"relevance 1 − σ(α)\n(grey: not in the class's top {k})")
    ax.set_xticks(range(len(filters)), [f"#{j}" for j in filters], rotation=90, fontsize=7)
    ax.set_xticks(np.arange(-0.5, len(filters), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(classes), 1), minor=True)
    ax.grid(which="minor", color="#ffffff", lw=0.8)
    ax.tick_params(which="minor", length=0)
    counts = member.sum(axis=1)
    ax.set_yticks(range(len(classes)), [f"{nm}  ({int(n)} shared)" for nm, n in zip(names, counts)], fontsize=8)
    ax.set_xlabel(f"filter (output channel) of layer {layer}")
    ax.set_ylabel("forgotten class")
    ax.set_title(f"Filter–class relations, layer {layer}: filters in the top-{k} of ≥ {min_classes} classes\n"
                 f"(a coloured cell: the filter is among the {k} the class relies on most)", fontsize=9)
    return _save(fig, Path(path))


def plot_untraining(history: Sequence[dict], path: str | Path, method: str = "wfnet") -> Path:
    """The untraining curve of a ``wfkern unlearn`` run from its ``history.jsonl`` records.

    Left: validation accuracy on retained classes (Acc_r) and on the forgotten class (Acc_f), in %; right: the
    validation objective (Eq. 3) and the running training loss; both against optimiser steps, the best
    validation (the filters kept) marked.

    Args:
        history: the records (``step``, ``val_acc_r``, ``val_acc_f``, ``val_objective``, ``train_loss``, ``best``).
        path: the PNG to write.
        method: name for the title.
    """
    rows = sorted((r for r in history if isinstance(r.get("step"), (int, float))), key=lambda r: r["step"])
    if not rows:
        raise ValueError(f"wfkern.plot_untraining: history must hold validation records with a step, got none for "
                         f"{method!r}")
    steps = np.asarray([r["step"] for r in rows], dtype=float)

    def series(key: str, scale: float = 1.0) -> np.ndarray:
        return np.asarray([np.nan if r.get(key) is None else scale * float(r[key]) for r in rows], dtype=float)

    obj = series("val_objective")
    best_i = int(np.nanargmin(obj)) if np.isfinite(obj).any() else None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    a1.plot(steps, series("val_acc_r", 100), "o-", ms=3, color="#4C72B0", label="Acc_r (retained classes)")
    a1.plot(steps, series("val_acc_f", 100), "o-", ms=3, color="#DD8452", label="Acc_f (forgotten class)")
    a1.set_ylim(-3, 103)
    a1.set_ylabel("validation accuracy (%)")
    a1.set_title("Accuracy under each sample's forget mask", fontsize=10)
    a2.plot(steps, obj, "o-", ms=3, color="#55A868", label="validation objective")
    loss = series("train_loss")
    if np.isfinite(loss).any():
        a2.plot(steps, loss, "-", color="#8172B2", alpha=0.8, label="training loss (running mean)")
    finite = np.concatenate([obj[np.isfinite(obj)], loss[np.isfinite(loss)]])
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 50:
        a2.set_yscale("log")
    a2.set_ylabel("objective (Eq. 3)")
    a2.set_title("Objective", fontsize=10)
    for ax in (a1, a2):
        if best_i is not None:
            ax.axvline(steps[best_i], color="k", ls="--", lw=1, label=f"best (step {int(steps[best_i])}): kept")
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{_label(method)}: untraining curve ({len(rows)} validations)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, Path(path))
