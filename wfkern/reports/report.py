"""``wfkern report``: Markdown + self-contained HTML (figures base64-embedded) + PNG figures from evaluation JSON."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
from pathlib import Path
from typing import Optional

from wfkern._atomic import atomic_write_text

from .figures import plot_insertion_deletion, plot_per_class_accuracy, plot_relations
from .tables import METHOD_LABELS, ordered, per_class_table, table1, table2, to_html, to_markdown

__all__ = ["load_results", "write_report", "check_results", "report_files"]

_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}th{background:#f0f0f0}img{max-width:100%}"
        "p.note{color:#555;font-size:.9em}")


def load_results(path: str | os.PathLike) -> dict:
    """Read one ``wfkern.evaluate`` result: a ``results.json`` file or a folder holding one.

    Raises:
        FileNotFoundError: no such file (or a folder without results.json).
        ValueError: unreadable or malformed JSON, or JSON that is not an evaluation result (the file is
            named, and for a wrong structure the key).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"wfkern.load_results: path must be a results.json or a folder with one, got {path}")
    try:
        with open(p, encoding="utf-8") as f:
            res = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"wfkern.load_results: {p} must be JSON, got a syntax error at line {e.lineno} column "
                         f"{e.colno} ({e.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"wfkern.load_results: {p} must be UTF-8 JSON text, got undecodable bytes") from None
    except RecursionError:
        raise ValueError(f"wfkern.load_results: {p} must be a `wfkern evaluate` result, got JSON nested too deeply") from None
    except OSError as e:
        raise ValueError(f"wfkern.load_results: {p} must be readable, got {e.strerror or type(e).__name__}") from None
    check_results(res, str(p))
    return res


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_NUMBER_KEYS = ("acc_r", "acc_f", "zrf", "mia", "mia_prob", "attack_acc", "rt", "insertion_auc", "deletion_auc")
_ROW_KEYS = _NUMBER_KEYS + ("orig_acc",)
_COST_NUMBERS = ("all_classes_runs", "all_classes_seconds", "all_classes_bytes")


def check_results(res, source: str) -> None:
    """Check that ``res`` has the structure of a ``wfkern.evaluate`` result, as far as a report reads it.

    Raises:
        ValueError: ``wfkern.load_results: key 'per_class.3.acc_r' of <source> must be ..., got ...``.
    """

    def bad(key: str, expectation: str, got) -> None:
        raise ValueError(f"wfkern.load_results: key {key!r} of {source} must {expectation}, got {got}")

    def number(key: str, v) -> None:
        if v is not None and not _is_num(v):
            bad(key, "be a number or null", _short(v))

    def typed(key: str, v, typ: type, expectation: str) -> None:
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            bad(key, expectation, _short(v))

    if not isinstance(res, dict):
        raise ValueError(f"wfkern.load_results: {source} must hold a `wfkern evaluate` result (a JSON object), "
                         f"got a JSON {type(res).__name__}")
    for key in ("summary", "classes", "per_class", "num_classes"):
        if key not in res:
            bad(key, "be present (is this a `wfkern evaluate` results.json?)", "nothing")
    typed("num_classes", res["num_classes"], int, "be an integer >= 1")
    if res["num_classes"] < 1:
        bad("num_classes", "be an integer >= 1", res["num_classes"])
    typed("summary", res["summary"], dict, "be a JSON object")
    for key in _NUMBER_KEYS:
        number(f"summary.{key}", res["summary"].get(key))
    for key in ("n_classes", "rt_capped"):
        if res["summary"].get(key) is not None:
            typed(f"summary.{key}", res["summary"][key], int, "be an integer")
    if res["summary"].get("insertion_auc") is not None:
        if not _is_num(res["summary"].get("deletion_auc")):
            bad("summary.deletion_auc", "be a number beside insertion_auc", _short(res["summary"].get("deletion_auc")))
        typed("summary.n_classes", res["summary"].get("n_classes"), int, "be an integer")
    typed("classes", res["classes"], list, "be a list of class indices")
    if not res["classes"]:
        bad("classes", "hold at least one class", "[]")
    typed("per_class", res["per_class"], dict, "be a JSON object (class -> metrics)")
    for i, c in enumerate(res["classes"]):
        if not _is_int(c) or not 0 <= c < res["num_classes"]:
            bad(f"classes.{i}", f"be a class index in [0, {res['num_classes']})", _short(c))
        row = res["per_class"].get(str(c), res["per_class"].get(c))
        if row is None:
            bad(f"per_class.{c}", "be present for every evaluated class", "nothing")
        typed(f"per_class.{c}", row, dict, "be a JSON object")
        for key in _ROW_KEYS:
            number(f"per_class.{c}.{key}", row.get(key))
        insdel = row.get("insdel")
        if insdel is not None:
            typed(f"per_class.{c}.insdel", insdel, dict, "be a JSON object")
            k = insdel.get("k")
            if not isinstance(k, list) or not all(_is_num(v) for v in k):
                bad(f"per_class.{c}.insdel.k", "be a list of numbers", _short(k))
            for key in ("insertion_curve", "deletion_curve"):
                curve = insdel.get(key)
                if not isinstance(curve, list) or len(curve) != len(k) or not all(v is None or _is_num(v) for v in curve):
                    bad(f"per_class.{c}.insdel.{key}", f"be a list of {len(k)} numbers (one per k)", _short(curve))
            for key in ("insertion_auc", "deletion_auc"):
                if not _is_num(row.get(key)):
                    bad(f"per_class.{c}.{key}", "be a number beside the curves", _short(row.get(key)))
    if res.get("method") is not None:
        typed("method", res["method"], str, "be a string")
    names = res.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        bad("class_names", "be a list of strings", _short(names))
    if res.get("settings") is not None:
        typed("settings", res["settings"], dict, "be a JSON object")
    cost = res.get("cost")
    if cost is not None:
        typed("cost", cost, dict, "be a JSON object")
        for key in _COST_NUMBERS:
            number(f"cost.{key}", cost.get(key))
    rel = res.get("relations")
    if rel:
        typed("relations", rel, dict, "be a JSON object")
        for key in ("classes", "filters"):
            if not isinstance(rel.get(key), list) or not all(_is_int(v) for v in rel[key]):
                bad(f"relations.{key}", "be a list of integers", _short(rel.get(key)))
        n, m = len(rel["classes"]), len(rel["filters"])
        for key in ("member", "relevance"):
            grid = rel.get(key)
            if not (isinstance(grid, list) and len(grid) == n and all(
                    isinstance(r, list) and len(r) == m and all(_is_num(v) for v in r) for r in grid)):
                bad(f"relations.{key}", f"be {n} lists of {m} numbers (classes x shared filters)", _short(grid))
        if not isinstance(rel.get("layer"), str):
            bad("relations.layer", "be a layer name", _short(rel.get("layer")))


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(str(path), text)


def _file_stem(method: str, taken: set[str]) -> str:
    """A file-name-safe form of a method name (never a path), unique among ``taken``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(method)).strip("._") or "method"
    stem, base, i = stem[:64], stem[:64], 2
    while stem in taken:
        stem, i = f"{base}_{i}", i + 1
    taken.add(stem)
    return stem


def report_files(results: dict) -> list[str]:
    """Names of every file ``write_report`` writes into its folder for these results."""
    return ["report.md", "report.html"] + [name for _, name, _ in _figure_plan(results)]


def _figure_plan(results: dict) -> list[tuple[str, str, object]]:
    """(caption, file name, plot thunk) for every figure, in order."""
    plan = [("Per-class accuracy with each class forgotten", "per_class_accuracy.png",
             lambda path: plot_per_class_accuracy(results, path))]
    taken: set[str] = set()
    for m in ordered(results):
        stem = _file_stem(m, taken)
        if results[m]["summary"].get("insertion_auc") is not None:
            plan.append((f"Insertion and deletion ({METHOD_LABELS.get(m, m).strip('*')})",
                         f"insertion_deletion_{stem}.png",
                         lambda path, m=m: plot_insertion_deletion(results[m], path, m)))
        if results[m].get("relations"):
            plan.append((f"Filter–class relations, layer {results[m]['relations']['layer']}", f"relations_{stem}.png",
                         lambda path, m=m: plot_relations(results[m]["relations"], path, results[m].get("class_names"))))
    return plan


def _figures(results: dict, out: Path) -> list[tuple[str, Path]]:
    return [(cap, plot(out / name)) for cap, name, plot in _figure_plan(results)]


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
    for name in report_files(results):  # before any figure is drawn
        if (out / name).is_dir():
            raise ValueError(f"wfkern.write_report: {out / name} must be a file path, got a directory")
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
