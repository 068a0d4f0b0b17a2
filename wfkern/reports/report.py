"""``wfkern report``: Markdown + self-contained HTML (figures base64-embedded) + PNG figures from evaluation JSON."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from wfkern._atomic import atomic_write_text
from wfkern.metrics.classes import format_classes
from wfkern.metrics.evaluate import summarize

from .figures import (plot_insertion_deletion, plot_per_class_accuracy, plot_relations, plot_untraining,
                      relations_explanation)
from .schema import check_results
from .spread import manifest_lines
from .tables import (GAP_METRICS, depth_table, gap_table, gaps, method_label, mia_verdict, ordered, per_class_table,
                     reference_method, table1, table2, to_html, to_markdown)

__all__ = ["load_results", "write_report", "check_results", "report_files", "align_classes", "restrict_classes"]

_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}th{background:#f0f0f0}img{max-width:100%}"
        "p.note{color:#555;font-size:.9em}p.verdict{background:#fff6e0;border-left:4px solid #e0a000;padding:6px 10px}"
        "figcaption{color:#444;font-size:.9em;max-width:900px}")


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


# --- the classes every method shares -----------------------------------------------------------------------

def _restrict_relations(rel: dict, keep: list[int]) -> dict:
    """The filter-class relations of a subset of the classes: their rows, and the filters still in the top-k of
    ``min_classes`` of them (a subset of the filters shared by all, so no relevance is missing)."""
    rows = [i for i, c in enumerate(rel["classes"]) if c in set(keep)]
    member = [rel["member"][i] for i in rows]
    need = rel.get("min_classes", 2)
    cols = [j for j in range(len(rel["filters"])) if sum(int(m[j]) for m in member) >= need]
    top = rel.get("top")
    out = {**rel, "classes": [rel["classes"][i] for i in rows], "filters": [rel["filters"][j] for j in cols],
           "member": [[m[j] for j in cols] for m in member],
           "relevance": [[rel["relevance"][i][j] for j in cols] for i in rows]}
    if isinstance(top, dict):
        out["top"] = {k: v for k, v in top.items() if int(k) in set(keep)}
    return out


def restrict_classes(result: dict, classes: list[int]) -> dict:
    """A copy of one ``wfkern.evaluate`` result over a subset of its classes: per-class rows, the summary
    (recomputed), the original's per-class accuracy and the filter-class relations."""
    keep = [c for c in result["classes"] if c in set(classes)]
    pc = result["per_class"]
    rows = {c: (pc[c] if c in pc else pc[str(c)]) for c in keep}
    out = {**result, "classes": keep, "per_class": {str(c): r for c, r in rows.items()},
           "summary": {**result["summary"], **summarize(rows)}}
    orig = result.get("original")
    if isinstance(orig, dict) and isinstance(orig.get("per_class_acc"), dict):
        pa = orig["per_class_acc"]
        out["original"] = {**orig, "per_class_acc": {str(c): pa.get(str(c), pa.get(c)) for c in keep}}
    if result.get("relations"):
        out["relations"] = _restrict_relations(result["relations"], keep)
    return out


def align_classes(results: dict) -> tuple[dict, list[int], Optional[str]]:
    """Put every method on the classes they all share.

    Returns:
        ``(results over the shared classes, the shared classes, a sentence naming them and what each method
        evaluated)``; the sentence is None (and the results unchanged) when all methods evaluated the same classes.
    Raises:
        ValueError: the methods share no class (each method's classes named).
    """
    sets = {m: [int(c) for c in results[m]["classes"]] for m in ordered(results)}
    shared = sorted(set.intersection(*(set(v) for v in sets.values())))
    if all(sorted(v) == shared for v in sets.values()):
        return results, shared, None
    label = {m: method_label(m, results[m]).strip("*").rstrip(" †") for m in sets}
    listed = "; ".join(f"{label[m]}: {format_classes(v)}" for m, v in sets.items())
    if not shared:
        raise ValueError(f"wfkern.write_report: results must share at least one evaluated class to be compared, "
                         f"got {listed}; evaluate them on common classes (--classes)")
    names = next((results[m].get("class_names") for m in sets if results[m].get("class_names")), None)
    counts = ", ".join(f"{label[m]} {len(v)}" for m, v in sets.items())
    what = "the one class" if len(shared) == 1 else f"the {len(shared)} classes"
    note = (f"Compared on {what} all methods were evaluated on: {format_classes(shared, names)} "
            f"(classes evaluated: {counts}). Every table and figure uses only these; the other classes' results "
            "are left out.")
    return {m: restrict_classes(results[m], shared) for m in results}, shared, note


# --- figures ---------------------------------------------------------------------------------------------------

_PER_CLASS_EXPLANATION = ("Bars: accuracy on the other classes (Acc_r, higher is better) and on the forgotten class "
                          "(Acc_f, lower is better) with each class forgotten in turn; dot: the original model's "
                          "accuracy on that class.")
_INSDEL_EXPLANATION = ("Insertion re-opens the gates most relevant to the forgotten class, deletion closes them in "
                       "the un-masked model; y = the class's confidence relative to the original's. A steep rise "
                       "(insertion) and a steep fall (deletion) mean the gates pinpoint what the class needs.")
_UNTRAINING_EXPLANATION = ("The untraining round from the run's history.jsonl: validation accuracy on retained "
                           "classes and on the forgotten class (each sample under a forget mask), and the objective, "
                           "against optimiser steps; the dashed line marks the best validation, whose filters are "
                           "the ones evaluated.")


def _history(result: dict) -> list:
    hist = result.get("unlearn_history")
    return hist if isinstance(hist, list) and any(isinstance(r, dict) and "step" in r for r in hist) else []


def report_files(results: dict) -> list[str]:
    """Names of every file ``write_report`` writes into its folder for these results."""
    return ["report.md", "report.html"] + [name for _, _, name, _ in _figure_plan(results)]


def _figure_plan(results: dict) -> list[tuple[str, str, str, object]]:
    """(caption, one-line explanation, file name, plot thunk) for every figure, in order."""
    plan = [("Per-class accuracy with each class forgotten", _PER_CLASS_EXPLANATION, "per_class_accuracy.png",
             lambda path: plot_per_class_accuracy(results, path))]
    taken: set[str] = set()
    for m in ordered(results):
        stem = _file_stem(m, taken)
        label = method_label(m, results[m]).strip("*")
        if _history(results[m]):
            plan.append((f"Untraining curve ({label})", _UNTRAINING_EXPLANATION, f"untraining_{stem}.png",
                         lambda path, m=m: plot_untraining(_history(results[m]), path, m)))
        if results[m]["summary"].get("insertion_auc") is not None:
            plan.append((f"Insertion and deletion ({label})", _INSDEL_EXPLANATION, f"insertion_deletion_{stem}.png",
                         lambda path, m=m: plot_insertion_deletion(results[m], path, m)))
        if results[m].get("relations"):
            rel = results[m]["relations"]
            plan.append((f"Filter–class relations ({label}), layer {rel['layer']}", relations_explanation(rel),
                         f"relations_{stem}.png",
                         lambda path, m=m: plot_relations(results[m]["relations"], path,
                                                          results[m].get("class_names"))))
    return plan


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
        "in brackets that attacker's accuracy on held-out members/non-members. 50% is chance: within 5 points of "
        "it the attacker cannot tell members apart and MIA says nothing (marked 'at chance').",
        "Time and storage: what it takes to obtain an unlearned model for every class († = single-class "
        "methods, one run and one checkpoint per class; measured mean × Nc when a subset of classes ran).",
    ]


def _gap_text(results: dict, ref: str) -> str:
    names = ", ".join(name for _, name in GAP_METRICS)
    return (f"Gap = |method − {method_label(ref, results[ref]).strip('*')}| per metric ({names}), in percentage "
            "points, over the classes compared; the mean gap is the mean of those gaps (lower = closer to retraining "
            "from scratch, the gold standard). RT is left out (epochs, capped).")


# --- writing: into a staging folder, published only when everything is written ---------------------------------

_STAGE_PREFIX = ".wfkern-report.partial-"

DEPTH_EXPLANATION = ("Whether the class is gone from the representation or only from the output. Probe: a linear "
                     "probe (logistic regression) fitted on the unlearned model's features (default: the input of "
                     "the classification head) of training samples of every class, tested on the forgotten class "
                     "(lower = less decodable; a model that only hides the class at the head scores like the "
                     "original). Retain-FT: the class's accuracy after fine-tuning on the other classes only "
                     "(lower = it does not come back). MIA-efficacy: fraction of the class's training samples an "
                     "SVC attacker calls non-members (higher = more forgotten). In %, means over the classes.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_dead_stages(where: Path) -> None:
    """Staging folders in ``where`` left by a killed report (their writer's process is gone)."""
    try:
        names = os.listdir(where)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(re.escape(_STAGE_PREFIX) + r"(\d+)-[0-9a-f]{8}", name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(where / name, ignore_errors=True)


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A private folder to write the report into; on success its files move into ``out``, on any failure it is
    removed with every folder this call created: a failed report leaves nothing behind, an existing report
    stays as it was.

    The staging folder is a hidden folder inside ``out`` when ``out`` exists (its files then move in with one
    rename each), else beside it, and then it *becomes* ``out`` with one rename.
    """
    created = []
    p = out
    while not p.exists():
        created.append(p)
        p = p.parent
    inside = out.is_dir()
    where = out if inside else out.parent
    where.mkdir(parents=True, exist_ok=True)
    _remove_dead_stages(where)
    stage = where / f"{_STAGE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(stage, 0o777)  # the umask applies, as for any new folder: it may become ``out``
    try:
        yield stage
        if not inside and not out.exists():
            try:
                os.rename(stage, out)
                return
            except OSError:
                out.mkdir(exist_ok=True)
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for d in created:  # innermost first: ``out`` (made by this call, so all ours), then empty parents
            try:
                shutil.rmtree(d) if d == out else d.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                break
        raise
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def check_report_dir(out: str | os.PathLike, results: dict) -> None:
    """Raise ValueError now when the report could not be published into ``out`` (nothing is created)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"wfkern.write_report: out_dir must be a directory, got {out}, which is a file")
    for name in report_files(results):
        if (out / name).is_dir():
            raise ValueError(f"wfkern.write_report: {out / name} must be a file path, got a directory")


def write_report(results: dict, out_dir: str | os.PathLike, *, title: str = "wfkern unlearning report",
                 per_class_method: Optional[str] = None, reference: Optional[str] = None) -> dict:
    """Write ``report.md``, ``report.html`` and the PNG figures into ``out_dir``, all or nothing.

    Methods evaluated on different classes are compared on the classes they all share (the report says which).
    With a retrained-from-scratch method among them, a table gives every other method's gap to it.

    Args:
        results: method name ("original", "retrain", "random-labels", "neg-grad", "wfnet", or any other
            method's name) -> ``wfkern.evaluate`` result; an optional ``"cost"`` (``wfkern.baselines`` record),
            ``"relations"`` (``filter_class_relations``) and ``"unlearn_history"`` (``read_history``) inside
            each are used when present.
        out_dir: created when missing. Everything is written into a staging folder beside it first; a failure
            leaves ``out_dir`` as it was (absent, or the previous report).
        title: the report's heading.
        per_class_method: whose per-class table to show (default WF-Net, else the last method).
        reference: the retrained method of the gap table (default "retrain" when present).
    Returns:
        ``{"markdown": path, "html": path, "figures": [paths], "classes": the classes compared,
        "class_note": sentence or None, "mia_note": sentence or None, "reference": method or None,
        "gaps": {method: {metric: points, "mean": points}}}``.
    Raises:
        ValueError: no results, methods without a common class, an unknown ``reference``, or an output path
            taken by a directory.
    """
    if not results:
        raise ValueError("wfkern.write_report: results must hold at least one method, got none")
    results, shared, class_note = align_classes(results)
    ref = reference_method(results, reference)
    if per_class_method is not None and per_class_method not in results:
        raise ValueError(f"wfkern.write_report: per_class_method must be one of {ordered(results)}, "
                         f"got {per_class_method!r}")
    out = Path(out_dir)
    check_report_dir(out, results)  # before any figure is drawn
    pcm = per_class_method or ("wfnet" if "wfnet" in results else ordered(results)[-1])
    t1, t2, tpc = table1(results), table2(results), per_class_table(results[pcm])
    td, manifest = depth_table(results), manifest_lines(results)
    tg = gap_table(results, ref) if ref is not None else None
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    notes, verdict = _notes(results), mia_verdict(results)
    label = method_label(pcm, results[pcm]).strip("*")
    plan = _figure_plan(results)
    with _staging(out) as stage:
        figs = [(cap, expl, plot(stage / name).name) for cap, expl, name, plot in plan]
        md = [f"# {title}", "", f"Generated {stamp}.", ""]
        if class_note:
            md += [f"**{class_note}**", ""]
        md += ["## Table 1: unlearning", "", to_markdown(t1), ""]
        if verdict:
            md += [f"**{verdict}**", ""]
        md += [f"- {n}" for n in notes] + [""]
        if tg is not None:
            md += ["## Gap to retraining", "", _gap_text(results, ref), "", to_markdown(tg), ""]
        if t2[1]:
            md += ["## Table 2: insertion / deletion on the alpha masks", "", to_markdown(t2), ""]
        if td[1]:
            md += ["## Depth of forgetting", "", DEPTH_EXPLANATION, "", to_markdown(td), ""]
        md += [f"## Per class: {label}", "", to_markdown(tpc), "", "RT marked * hit the cap.", ""]
        md += ["## Manifest", ""] + [f"- {ln}" for ln in manifest] + ["", "## Figures", ""]
        for cap, expl, name in figs:
            md += [f"![{cap}]({name})", "", f"*{cap}.* {expl}", ""]
        _write_text(stage / "report.md", "\n".join(md))
        body = [f"<h1>{html.escape(title)}</h1>", f"<p class='note'>Generated {stamp}.</p>"]
        if class_note:
            body.append(f"<p class='verdict'>{html.escape(class_note)}</p>")
        body += ["<h2>Table 1: unlearning</h2>", to_html(t1)]
        if verdict:
            body.append(f"<p class='verdict'>{html.escape(verdict)}</p>")
        body.append("<ul>" + "".join(f"<li class='note'>{html.escape(n)}</li>" for n in notes) + "</ul>")
        if tg is not None:
            body += ["<h2>Gap to retraining</h2>", f"<p class='note'>{html.escape(_gap_text(results, ref))}</p>",
                     to_html(tg)]
        if t2[1]:
            body += ["<h2>Table 2: insertion / deletion on the alpha masks</h2>", to_html(t2)]
        if td[1]:
            body += ["<h2>Depth of forgetting</h2>", f"<p class='note'>{html.escape(DEPTH_EXPLANATION)}</p>",
                     to_html(td)]
        body += [f"<h2>Per class: {html.escape(label)}</h2>", to_html(tpc),
                 "<p class='note'>RT marked * hit the cap.</p>", "<h2>Manifest</h2>",
                 "<ul>" + "".join(f"<li class='note'>{html.escape(ln)}</li>" for ln in manifest) + "</ul>",
                 "<h2>Figures</h2>"]
        for cap, expl, name in figs:
            data = base64.b64encode((stage / name).read_bytes()).decode("ascii")
            body.append(f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,{data}'>"
                        f"<figcaption><b>{html.escape(cap)}.</b> {html.escape(expl)}</figcaption></figure>")
        page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
        _write_text(stage / "report.html", page)
    return {"markdown": out / "report.md", "html": out / "report.html", "figures": [out / n for _, _, n in figs],
            "classes": shared, "class_note": class_note, "mia_note": verdict, "reference": ref,
            "gaps": gaps(results, ref) if ref is not None else {}}
