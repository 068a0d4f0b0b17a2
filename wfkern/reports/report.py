"""``wfkern report``: Markdown + self-contained HTML (figures base64-embedded) + PNG figures from evaluation JSON."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from pathlib import Path
from typing import Optional

from wfkern._atomic import atomic_write_text

from .figures import plot_insertion_deletion, plot_per_class_accuracy, plot_relations
from .tables import METHOD_LABELS, ordered, per_class_table, table1, table2, to_html, to_markdown

__all__ = ["load_results", "write_report"]

_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}th{background:#f0f0f0}img{max-width:100%}"
        "p.note{color:#555;font-size:.9em}")


def load_results(path: str | os.PathLike) -> dict:
    """Read one ``wfkern.evaluate`` result: a ``results.json`` file or a folder holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"wfkern.load_results: path must be a results.json or a folder with one, got {path}")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(str(path), text)


def _figures(results: dict, out: Path) -> list[tuple[str, Path]]:
    figs = [("Per-class accuracy with each class forgotten", plot_per_class_accuracy(results, out / "per_class_accuracy.png"))]
    for m in ordered(results):
        if results[m]["summary"].get("insertion_auc") is not None:
            figs.append((f"Insertion and deletion ({METHOD_LABELS.get(m, m).strip('*')})",
                         plot_insertion_deletion(results[m], out / f"insertion_deletion_{m}.png", m)))
        if results[m].get("relations"):
            figs.append((f"Filter–class relations, layer {results[m]['relations']['layer']}",
                         plot_relations(results[m]["relations"], out / f"relations_{m}.png",
                                        results[m].get("class_names"))))
    return figs


def _notes(results: dict) -> list[str]:
    any_res = results[ordered(results)[0]]
    s = any_res.get("settings", {})
    return [
        f"Classes evaluated: {len(any_res['classes'])} of {any_res['num_classes']}. Accuracies, ZRF and MIA in %; "
        "ZRF = 1 − mean JS (natural log) against a randomly initialised model of the same architecture "
        f"(seed {s.get('zrf_seed', 0)}).",
        f"RT: epochs of fine-tuning (Adam lr {s.get('rt_lr')}, {s.get('rt_samples')} fresh training samples an "
        f"epoch, batch {s.get('rt_batch_size')}) until the forgotten class is back to {s.get('rt_target')} × the "
        f"original's accuracy on it, cap {s.get('rt_max_epochs')}; (n) = classes that hit the cap.",
        "MIA: fraction of the forgotten class's training samples that an attacker on confidence/modified-entropy "
        "features (monotone gradient-boosted trees; retain-train = member, test = non-member) still calls members; "
        "'attack acc' is that attacker's accuracy on held-out members/non-members (50% = chance: then MIA says "
        "little).",
        "Time and storage: what it takes to obtain an unlearned model for every class († = single-class "
        "methods, one run and one checkpoint per class; measured mean × Nc when a subset of classes ran).",
    ]


def write_report(results: dict, out_dir: str | os.PathLike, *, title: str = "wfkern unlearning report",
                 per_class_method: Optional[str] = None) -> dict:
    """Write ``report.md``, ``report.html`` and the PNG figures into ``out_dir``.

    Args:
        results: method name ("original", "retrain", "random-labels", "neg-grad", "wfnet", or any) ->
            ``wfkern.evaluate`` result; an optional ``"cost"`` (``wfkern.baselines`` record) and
            ``"relations"`` (``filter_class_relations``) inside each are used when present.
        out_dir: created when missing.
        title: the report's heading.
        per_class_method: whose per-class table to show (default WF-Net, else the last method).
    Returns:
        ``{"markdown": path, "html": path, "figures": [paths]}``.
    """
    if not results:
        raise ValueError("wfkern.write_report: results must hold at least one method, got none")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = _figures(results, out)
    pcm = per_class_method or ("wfnet" if "wfnet" in results else ordered(results)[-1])
    t1, t2, tpc = table1(results), table2(results), per_class_table(results[pcm])
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    notes = _notes(results)
    label = METHOD_LABELS.get(pcm, pcm).strip("*")
    md = [f"# {title}", "", f"Generated {stamp}.", "", "## Table 1: unlearning", "", to_markdown(t1), ""]
    md += [f"- {n}" for n in notes] + [""]
    if t2[1]:
        md += ["## Table 2: insertion / deletion on the alpha masks", "", to_markdown(t2), ""]
    md += [f"## Per class: {label}", "", to_markdown(tpc), "", "RT marked * hit the cap.", "", "## Figures", ""]
    md += [f"![{cap}]({p.name})\n" for cap, p in figs]
    md_path = out / "report.md"
    _write_text(md_path, "\n".join(md))
    body = [f"<h1>{html.escape(title)}</h1>", f"<p class='note'>Generated {stamp}.</p>", "<h2>Table 1: unlearning</h2>",
            to_html(t1), "<ul>" + "".join(f"<li class='note'>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    if t2[1]:
        body += ["<h2>Table 2: insertion / deletion on the alpha masks</h2>", to_html(t2)]
    body += [f"<h2>Per class: {html.escape(label)}</h2>", to_html(tpc), "<p class='note'>RT marked * hit the cap.</p>",
             "<h2>Figures</h2>"]
    for cap, p in figs:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        body.append(f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{html.escape(cap)}</figcaption></figure>")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    html_path = out / "report.html"
    _write_text(html_path, page)
    return {"markdown": md_path, "html": html_path, "figures": [p for _, p in figs]}
