"""Table 1 (Acc_r, Acc_f, ZRF, RT, MIA, cost), Table 2 (insertion/deletion) and the per-class table, as rows.

A table is ``(headers, rows)`` of strings; ``to_markdown`` and ``to_html`` render it. Inputs are the dicts
``wfkern.evaluate`` returns (fractions in [0, 1]) with an optional ``"cost"`` record from ``wfkern.baselines``.
"""

from __future__ import annotations

import html
from typing import Optional, Sequence

__all__ = ["METHOD_LABELS", "METHOD_ORDER", "table1", "table2", "depth_table", "per_class_table", "gap_table", "gaps",
           "reference_method", "mia_at_chance", "mia_verdict", "MIA_CHANCE_MARGIN", "GAP_METRICS", "method_label",
           "to_markdown", "to_html", "fmt_pct", "fmt_bytes", "fmt_seconds"]

# The paper's row order: the original, the gold standard, the baselines, WF-Net last. Any other method name
# (a new baseline) is a row too, among the baselines, labelled by its name.
METHOD_ORDER = ("original", "retrain", "random-labels", "neg-grad", "ft", "ssd", "salun", "scrub", "l1-sparse",
                "wfnet")
METHOD_LABELS = {"original": "Original model", "retrain": "Retrained model", "random-labels": "Random labels †",
                 "neg-grad": "Negative gradients †", "ft": "Fine-tuning †", "ssd": "SSD †", "salun": "SalUn †",
                 "scrub": "SCRUB †", "l1-sparse": "l1-sparse †", "wfnet": "**WF-Net**"}

# The membership-inference attacker is "at chance" when its held-out accuracy is within this of 0.5: then the
# MIA number (how many forgotten-class samples it calls members) is a coin flip and says nothing.
MIA_CHANCE_MARGIN = 0.05

# The metrics of the gap to retraining: (summary key, column), all fractions shown x100 (percentage points).
GAP_METRICS = (("acc_r", "Acc_r"), ("acc_f", "Acc_f"), ("zrf", "ZRF"), ("mia", "MIA"))

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


def method_label(method: str, result: Optional[dict] = None) -> str:
    """The row label of a method: the paper's name for known methods, else the name itself, with † when its
    cost record says it needs one run per class (a single-class method)."""
    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    runs = ((result or {}).get("cost") or {}).get("all_classes_runs")
    return f"{method} †" if isinstance(runs, (int, float)) and runs > 1 else str(method)


def _label(method: str, result: Optional[dict] = None) -> str:
    return method_label(method, result)


def ordered(results: dict) -> list[str]:
    """Method names in the paper's row order: original, retrain, the baselines (known ones first, then any
    other name, sorted), WF-Net last."""
    head = [m for m in METHOD_ORDER[:-1] if m in results]
    others = sorted(m for m in results if m not in METHOD_ORDER)
    return head + others + (["wfnet"] if "wfnet" in results else [])


def mia_at_chance(attack_acc: Optional[float], margin: float = MIA_CHANCE_MARGIN) -> bool:
    """True when the attacker cannot tell members from non-members: its held-out accuracy is at most
    ``0.5 + margin`` (within ``margin`` of chance, or below chance, which is no better)."""
    return attack_acc is not None and float(attack_acc) <= 0.5 + margin


def _chance_words(attack_acc: float) -> str:
    return "below chance" if attack_acc < 0.5 - MIA_CHANCE_MARGIN else "at chance"


def _mia_cell(s: dict) -> str:
    mia, att = s.get("mia"), s.get("attack_acc")
    if mia is None:
        return "–"
    if att is None:
        return fmt_pct(mia)
    if mia_at_chance(att):
        return f"{fmt_pct(mia)} (attack {fmt_pct(att)}: {_chance_words(att)}, says nothing)"
    return f"{fmt_pct(mia)} (attack {fmt_pct(att)})"


def mia_verdict(results: dict) -> Optional[str]:
    """One sentence on whether the MIA column can be read: which methods' attacker is at chance."""
    rows = [(m, results[m]["summary"].get("attack_acc")) for m in ordered(results)
            if results[m]["summary"].get("mia") is not None and results[m]["summary"].get("attack_acc") is not None]
    if not rows:
        return None
    chance = [(m, a) for m, a in rows if mia_at_chance(a)]
    limit = f"{50 + 100 * MIA_CHANCE_MARGIN:.0f}%"
    if not chance:
        return (f"Membership inference: every attacker beats chance (accuracy above {limit}), so MIA can be "
                "compared: lower = fewer forgotten-class training samples still look like members.")
    listed = ", ".join(f"{_label(m, results[m]).strip('*').removesuffix(' †')} {fmt_pct(a)}%" for m, a in chance)
    if len(chance) == len(rows):
        return (f"Membership inference says nothing here: the attacker is at chance for every method ({listed}; "
                f"50% is a coin flip, and at most {limit} counts as chance), so an MIA of 0% is no evidence of "
                "forgetting and a high one no evidence against.")
    return (f"Membership inference says nothing for {listed}: the attacker is at chance there (at most {limit}; "
            "50% is a coin flip); read MIA only for the other rows.")


def table1(results: dict) -> Table:
    """One row per method: Acc_r, Acc_f, ZRF (x100), RT mean (capped count), MIA (%), cost for all classes.

    Args:
        results: method -> ``wfkern.evaluate`` result (optionally with ``"cost"``).
    """
    headers = ["Method", "Acc_r ↑", "Acc_f ↓", "ZRF ↑", "RT ↑", "MIA (%) ↓ (attacker's accuracy %)",
               "Runs = files, all classes", "Time, all classes", "Storage, all classes"]
    rows = []
    for m in ordered(results):
        s, cost = results[m]["summary"], results[m].get("cost") or {}
        runs = cost.get("all_classes_runs")
        rows.append([_label(m, results[m]), fmt_pct(s.get("acc_r")), fmt_pct(s.get("acc_f")), fmt_pct(s.get("zrf")),
                     _rt(s), _mia_cell(s), "–" if runs is None else f"{runs:g}",
                     fmt_seconds(cost.get("all_classes_seconds")), fmt_bytes(cost.get("all_classes_bytes"))])
    return headers, rows


def reference_method(results: dict, reference: Optional[str] = None) -> Optional[str]:
    """The retrained-from-scratch method the gaps are measured to: ``reference`` when given (it must be a
    method of ``results``), else "retrain", else the only method whose cost record says "retrain"; None if none."""
    if reference is not None:
        if reference not in results:
            raise ValueError(f"wfkern.gap_table: reference must be one of the methods {ordered(results)}, "
                             f"got {reference!r}")
        return reference
    if "retrain" in results:
        return "retrain"
    found = [m for m in ordered(results) if (results[m].get("cost") or {}).get("method") == "retrain"]
    return found[0] if len(found) == 1 else None


def gaps(results: dict, reference: Optional[str] = None) -> dict:
    """The gap to retraining: per method and metric ``|method − retrain|`` in percentage points, and their mean.

    Args:
        results: method -> ``wfkern.evaluate`` result (the summaries are compared, over the same classes).
        reference: the retrained method (default: ``reference_method``).
    Returns:
        ``{method: {"acc_r": gap or None, "acc_f": ..., "zrf": ..., "mia": ..., "mean": mean of the gaps
        present or None}}`` for every method but the reference; ``{}`` without a reference.
    """
    ref = reference_method(results, reference)
    if ref is None:
        return {}
    r = results[ref]["summary"]
    out = {}
    for m in ordered(results):
        if m == ref:
            continue
        s = results[m]["summary"]
        row = {k: (None if s.get(k) is None or r.get(k) is None else 100.0 * abs(float(s[k]) - float(r[k])))
               for k, _ in GAP_METRICS}
        present = [v for v in row.values() if v is not None]
        row["mean"] = sum(present) / len(present) if present else None
        out[m] = row
    return out


def gap_table(results: dict, reference: Optional[str] = None) -> Table:
    """Gap to retraining, one row per method: ``|method − retrain|`` per metric (points) and the mean gap.

    Rows are empty when no retrained method is among ``results``.
    """
    gap_rows = gaps(results, reference)
    headers = ["Method"] + [f"{name} gap" for _, name in GAP_METRICS] + ["Mean gap ↓"]
    f = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    rows = [[_label(m, results[m])] + [f(row[k]) for k, _ in GAP_METRICS] + [f(row["mean"])]
            for m, row in gap_rows.items()]
    return headers, rows


def depth_table(results: dict) -> Table:
    """How deep the forgetting goes, one row per method that has any of the depth metrics: Acc_f, the linear
    probe's Acc_f (and Acc_r) on the first probed layer, the class's accuracy after retain-only fine-tuning, and
    MIA-efficacy (confidence; entropy and modified entropy in brackets). Rows are empty when no method has them."""
    headers = ["Method", "Acc_f", "Probe Acc_f ↓ (probe Acc_r)", "Retain-FT Acc_f ↓ (Acc_r)",
               "MIA-efficacy ↑ (entropy, m-entropy)"]
    rows = []
    for m in ordered(results):
        s = results[m]["summary"]
        if all(s.get(k) is None for k in ("probe_acc_f", "rft_acc_f", "mia_eff")):
            continue
        probe = "–" if s.get("probe_acc_f") is None else \
            f"{fmt_pct(s['probe_acc_f'])} ({fmt_pct(s.get('probe_acc_r'))})"
        rft = "–" if s.get("rft_acc_f") is None else f"{fmt_pct(s['rft_acc_f'])} ({fmt_pct(s.get('rft_acc_r'))})"
        eff = "–" if s.get("mia_eff") is None else \
            f"{fmt_pct(s['mia_eff'])} ({fmt_pct(s.get('mia_eff_entropy'))}, {fmt_pct(s.get('mia_eff_m_entropy'))})"
        rows.append([_label(m, results[m]), fmt_pct(s.get("acc_f")), probe, rft, eff])
    return headers, rows


def table2(results: dict) -> Table:
    """Insertion (↑) and deletion (↓) AUCs of the methods that have alpha masks."""
    headers = ["Method", "Ins ↑", "Del ↓", "Classes"]
    rows = []
    for m in ordered(results):
        s = results[m]["summary"]
        if s.get("insertion_auc") is None:
            continue
        rows.append([_label(m, results[m]), f"{s['insertion_auc']:.2f}", f"{s['deletion_auc']:.2f}",
                     str(s["n_classes"])])
    return headers, rows


def per_class_table(result: dict, class_names: Optional[Sequence[str]] = None) -> Table:
    """Per-class rows of one method: original accuracy on the class, Acc_r, Acc_f, ZRF, RT, MIA (with the
    attacker's accuracy, "at chance" when it is), Ins, Del."""
    names = class_names or result.get("class_names") or []
    headers = ["Class", "Original acc", "Acc_r", "Acc_f", "ZRF", "RT", "MIA (%) (attack %)", "Ins", "Del"]
    rows = []
    for c in result["classes"]:
        r = result["per_class"][c] if c in result["per_class"] else result["per_class"][str(c)]
        rt = "–" if r.get("rt") is None else f"{r['rt']}{'*' if r.get('rt_capped') else ''}"
        ins = "–" if r.get("insertion_auc") is None else f"{r['insertion_auc']:.2f}"
        dele = "–" if r.get("deletion_auc") is None else f"{r['deletion_auc']:.2f}"
        name = names[c] if c < len(names) else str(c)
        rows.append([name, fmt_pct(r.get("orig_acc")), fmt_pct(r.get("acc_r")), fmt_pct(r.get("acc_f")),
                     fmt_pct(r.get("zrf")), rt, _mia_cell_short(r), ins, dele])
    return headers, rows


def _mia_cell_short(r: dict) -> str:
    if r.get("mia") is None:
        return "–"
    if r.get("attack_acc") is None:
        return fmt_pct(r["mia"])
    chance = f", {_chance_words(r['attack_acc'])}" if mia_at_chance(r["attack_acc"]) else ""
    return f"{fmt_pct(r['mia'])} ({fmt_pct(r['attack_acc'])}{chance})"


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
