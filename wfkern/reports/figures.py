"""PNG figures (matplotlib, Agg backend): per-class accuracy bars, insertion/deletion curves, filter-class relations."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wfkern._atomic import atomic_write  # noqa: E402

from .tables import METHOD_LABELS, ordered  # noqa: E402

__all__ = ["plot_per_class_accuracy", "plot_insertion_deletion", "plot_relations"]


def _row(result: dict, c: int) -> dict:
    pc = result["per_class"]
    return pc[c] if c in pc else pc[str(c)]


def _names(result: dict) -> list[str]:
    names = result.get("class_names") or []
    return [names[c] if c < len(names) else str(c) for c in result["classes"]]


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method).strip("*")


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
    first = results[methods[0]]
    n = len(first["classes"])
    fig, axes = plt.subplots(len(methods), 1, figsize=(max(6.0, 0.55 * n + 2.5), 2.6 * len(methods) + 0.6),
                             squeeze=False, sharex=True)
    x = np.arange(n)
    for ax, m in zip(axes[:, 0], methods):
        res = results[m]
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
        ax.set_title(f"{_label(m)}: accuracy with each class forgotten")
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xticks(x, _names(first), rotation=45 if n > 12 else 0, ha="right" if n > 12 else "center")
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
    fig.suptitle(f"{_label(method)}: insertion and deletion on the alpha masks", fontsize=11)
    return _save(fig, Path(path))


def plot_relations(relations: dict, path: str | Path, class_names: Optional[Sequence[str]] = None) -> Path:
    """Classes x shared filters: relevance ``1 - sigmoid(alpha)`` where the filter is in the class's top-k.

    Args:
        relations: ``wfkern.metrics.filter_class_relations`` output.
        path: the PNG to write.
        class_names: names by class index.
    """
    classes, filters = relations["classes"], relations["filters"]
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    member = np.asarray(relations["member"], dtype=bool).reshape(len(classes), len(filters))
    rel = np.asarray(relations["relevance"], dtype=float).reshape(len(classes), len(filters))
    grid = np.where(member, rel, np.nan)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(filters) + 2.5), max(3.0, 0.35 * len(classes) + 1.5)))
    if filters:
        vmax = float(np.nanmax(grid)) if np.isfinite(grid).any() else 1.0
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(vmax, 1e-6), interpolation="nearest")
        fig.colorbar(im, ax=ax, label="relevance 1 − σ(α) (blank: not in the class's top filters)")
        ax.set_xticks(range(len(filters)), [f"#{j}" for j in filters], rotation=90, fontsize=7)
        ax.set_xticks(np.arange(-0.5, len(filters), 1), minor=True)
        ax.set_yticks(np.arange(-0.5, len(classes), 1), minor=True)
        ax.grid(which="minor", color="#dddddd", lw=0.5)
        ax.tick_params(which="minor", length=0)
    else:
        ax.text(0.5, 0.5, "no filter is in the top list of two classes", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_yticks(range(len(classes)), names)
    ax.set_xlabel(f"filter (output channel) of layer {relations['layer']}")
    ax.set_ylabel("class")
    ax.set_title(f"Filter–class relations: top-{relations.get('top_k', 10)} filters per class, "
                 f"those shared by ≥ {relations.get('min_classes', 2)} classes", fontsize=10)
    return _save(fig, Path(path))
