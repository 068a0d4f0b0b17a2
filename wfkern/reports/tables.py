"""Table 1 (Acc_r, Acc_f, ZRF, RT, MIA, cost), Table 2 (insertion/deletion) and the per-class table, as rows.

A table is ``(headers, rows)`` of strings; ``to_markdown`` and ``to_html`` render it. Inputs are the dicts
``wfkern.evaluate`` returns (fractions in [0, 1]) with an optional ``"cost"`` record from ``wfkern.baselines``.
"""

from __future__ import annotations

import html
from typing import Optional, Sequence

__all__ = ["METHOD_LABELS", "METHOD_ORDER", "table1", "table2", "per_class_table", "to_markdown", "to_html",
           "fmt_pct", "fmt_bytes", "fmt_seconds"]

METHOD_ORDER = ("original", "retrain", "random-labels", "neg-grad", "wfnet")
METHOD_LABELS = {"original": "Original model", "retrain": "Retrained model", "random-labels": "Random labels †",
                 "neg-grad": "Negative gradients †", "wfnet": "**WF-Net**"}

Table = tuple[list[str], list[list[str]]]


def fmt_pct(x: Optional[float], digits: int = 1) -> str:
    """A fraction as a percentage (``0.953 -> "95.3"``); "–" when missing."""
    return "–" if x is None else f"{100.0 * x:.{digits}f}"


def fmt_bytes(n: Optional[float]) -> str:
    """Bytes in B / KiB / MiB / GiB."""
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GiB"


def fmt_seconds(s: Optional[float]) -> str:
    """Seconds as "12.3 s", "4.5 min" or "1.2 h"."""
    if s is None:
        return "–"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _rt(summary: dict) -> str:
    if summary.get("rt") is None:
        return "–"
    capped = summary.get("rt_capped", 0)
    prefix = "> " if capped and capped == summary.get("n_classes") else ""
    return f"{prefix}{summary['rt']:.1f} ({capped})"


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def ordered(results: dict) -> list[str]:
    """Method names in the paper's row order, unknown methods last."""
    known = [m for m in METHOD_ORDER if m in results]
    return known + sorted(m for m in results if m not in METHOD_ORDER)


def table1(results: dict) -> Table:
    """One row per method: Acc_r, Acc_f, ZRF (x100), RT mean (capped count), MIA (%), cost for all classes.

    Args:
        results: method -> ``wfkern.evaluate`` result (optionally with ``"cost"``).
    """
    headers = ["Method", "Acc_r ↑", "Acc_f ↓", "ZRF ↑", "RT ↑", "MIA (%) ↓", "Attack acc (%)", "Runs = files, all classes",
               "Time, all classes", "Storage, all classes"]
    rows = []
    for m in ordered(results):
        s, cost = results[m]["summary"], results[m].get("cost") or {}
        rows.append([_label(m), fmt_pct(s.get("acc_r")), fmt_pct(s.get("acc_f")), fmt_pct(s.get("zrf")), _rt(s),
                     fmt_pct(s.get("mia")), fmt_pct(s.get("attack_acc")), str(cost.get("all_classes_runs", "–")),
                     fmt_seconds(cost.get("all_classes_seconds")), fmt_bytes(cost.get("all_classes_bytes"))])
    return headers, rows


def table2(results: dict) -> Table:
    """Insertion (↑) and deletion (↓) AUCs of the methods that have alpha masks."""
    headers = ["Method", "Ins ↑", "Del ↓", "Classes"]
    rows = []
    for m in ordered(results):
        s = results[m]["summary"]
        if s.get("insertion_auc") is None:
            continue
        rows.append([_label(m), f"{s['insertion_auc']:.2f}", f"{s['deletion_auc']:.2f}", str(s["n_classes"])])
    return headers, rows


def per_class_table(result: dict, class_names: Optional[Sequence[str]] = None) -> Table:
    """Per-class rows of one method: original accuracy on the class, Acc_r, Acc_f, ZRF, RT, MIA, Ins, Del."""
    names = class_names or result.get("class_names") or []
    headers = ["Class", "Original acc", "Acc_r", "Acc_f", "ZRF", "RT", "MIA (%)", "Ins", "Del"]
    rows = []
    for c in result["classes"]:
        r = result["per_class"][c] if c in result["per_class"] else result["per_class"][str(c)]
        rt = "–" if r.get("rt") is None else f"{r['rt']}{'*' if r.get('rt_capped') else ''}"
        ins = "–" if r.get("insertion_auc") is None else f"{r['insertion_auc']:.2f}"
        dele = "–" if r.get("deletion_auc") is None else f"{r['deletion_auc']:.2f}"
        name = names[c] if c < len(names) else str(c)
        rows.append([name, fmt_pct(r.get("orig_acc")), fmt_pct(r.get("acc_r")), fmt_pct(r.get("acc_f")),
                     fmt_pct(r.get("zrf")), rt, fmt_pct(r.get("mia")), ins, dele])
    return headers, rows


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table."""
    headers, rows = table
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def to_html(table: Table) -> str:
    """An HTML table (``**bold**`` cells become ``<b>``)."""
    headers, rows = table

    def cell(text: str, tag: str) -> str:
        bold = text.startswith("**") and text.endswith("**")
        inner = html.escape(text.strip("*") if bold else text)
        return f"<{tag}>{'<b>' + inner + '</b>' if bold else inner}</{tag}>"

    head = "<tr>" + "".join(cell(h, "th") for h in headers) + "</tr>"
    body = "".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in rows)
    return f"<table>\n<thead>{head}</thead>\n<tbody>{body}</tbody>\n</table>"
