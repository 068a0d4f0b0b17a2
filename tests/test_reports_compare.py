"""Comparing methods in a report: shared classes, all-or-nothing output, MIA at chance, the gap to retraining,
the untraining curve and the filter-class figure when few filters are shared."""

from __future__ import annotations

import copy
import html
import json
import os

import pytest
import torch

from wfkern.metrics import EvalSettings, PerClassModels, evaluate
from wfkern.metrics.classes import format_classes, select_classes
from wfkern.reports import (align_classes, gap_table, gaps, mia_verdict, per_class_table, read_history, table1,
                            write_report)
from wfkern.reports.figures import plot_relations, relations_explanation
from wfkern.reports.report import _restrict_relations, report_files

from _toy_wf import evaluated_wf
from test_metrics_accuracy import ORIGINAL, PREDS, Lookup, _data

PNG = b"\x89PNG\r\n\x1a\n"


def _toy(classes, method="retrain"):
    """The toy per-class models of test_metrics_accuracy (known Acc_f / Acc_r per class)."""
    return evaluate(PerClassModels(Lookup(ORIGINAL), {c: Lookup(p) for c, p in PREDS.items()}, method=method),
                    _data(), classes=classes, progress=False, settings=EvalSettings(metrics=("acc",)),
                    class_names=["zero", "one", "two"])


@pytest.fixture(scope="module")
def wf_result():
    return json.loads(json.dumps(evaluated_wf(insdel_steps=6)))  # as a report reads it back: string keys


# --- which classes ---------------------------------------------------------------------------------------------

def test_select_classes_names_classes_and_samples_separately():
    assert select_classes(10, 3) == [3]  # class 3, never "3 random classes"
    assert select_classes(10, [5, 3, 5]) == [3, 5]
    sub = select_classes(1000, sample=10, seed=7)
    assert sub == select_classes(1000, sample=10, seed=7) and len(sub) == 10 and sub != select_classes(1000, sample=10,
                                                                                                        seed=8)
    # the subset earlier versions drew for classes=10 (a seeded randperm of all classes), kept for reproducibility
    assert sub == sorted(torch.randperm(1000, generator=torch.Generator().manual_seed(7))[:10].tolist())
    pool = [2, 4, 6, 8]
    drawn = select_classes(10, pool, seed=1, sample=2)
    assert len(drawn) == 2 and set(drawn) <= set(pool)
    with pytest.raises(ValueError, match=r"sample must be a count in \[1, 4\] \(the classes given\), got 5"):
        select_classes(10, pool, sample=5)
    with pytest.raises(ValueError, match=r"classes must be a non-empty list of indices in \[0, 10\) or one index, "
                                         r"got 10"):
        select_classes(10, 10)
    assert format_classes([0, 1, 2, 3, 5, 7, 8]) == "0-3, 5, 7, 8"
    assert format_classes([2, 0], ["cat", "dog", "emu"]) == "0 (cat), 2 (emu)"


def test_report_compares_methods_on_their_shared_classes(tmp_path, wf_result):
    retrain = _toy([0, 2])  # the baseline ran two of the three classes
    results = {"retrain": retrain, "wfnet": wf_result}
    aligned, shared, note = align_classes(results)
    assert shared == [0, 2]
    assert note.startswith("Compared on the 2 classes all methods were evaluated on: 0 (zero), 2 (two)")
    assert "Retrained model 2, WF-Net 3" in note
    wf = aligned["wfnet"]
    assert wf["classes"] == [0, 2] and sorted(wf["per_class"]) == ["0", "2"] and wf["summary"]["n_classes"] == 2
    assert wf["summary"]["insertion_auc"] == pytest.approx(
        (wf_result["per_class"]["0"]["insertion_auc"] + wf_result["per_class"]["2"]["insertion_auc"]) / 2)
    paths = write_report(results, tmp_path / "r")  # crashed before: "x and y must have same first dimension"
    assert paths["classes"] == [0, 2] and paths["class_note"] == note
    assert sorted(p.name for p in paths["figures"]) == ["insertion_deletion_wfnet.png", "per_class_accuracy.png",
                                                        "relations_wfnet.png"]
    md = paths["markdown"].read_text()
    assert f"**{note}**" in md and html.escape(note) in paths["html"].read_text()
    # Table 1 of the retrained model over classes 0 and 2: Acc_f (1/3 + 1/3) / 2, Acc_r (3/5 + 4/5) / 2
    assert "| Retrained model | 70.0 | 33.3 |" in md
    # the per-class table of WF-Net lists only the shared classes
    assert [r[0] for r in per_class_table(aligned["wfnet"])[1]] == ["zero", "two"]


def test_report_without_a_common_class_fails_and_writes_nothing(tmp_path, wf_result):
    only1 = _toy([1])
    wf0 = _toy([0, 2], method="wfnet")
    out = tmp_path / "new" / "deeper" / "report"
    with pytest.raises(ValueError, match=r"results must share at least one evaluated class to be compared, got "
                                         r"Retrained model: 1; WF-Net: 0, 2"):
        write_report({"retrain": only1, "wfnet": wf0}, out)
    assert sorted(os.listdir(tmp_path)) == []


def test_a_failed_report_leaves_no_folder_and_an_old_report_untouched(tmp_path, wf_result, monkeypatch):
    import wfkern.reports.report as report_mod

    results = {"retrain": _toy([0, 1, 2]), "wfnet": wf_result}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(report_mod, "plot_insertion_deletion", broken)  # the second figure fails
    out = tmp_path / "a" / "b" / "report"
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(results, out)
    assert os.listdir(tmp_path) == []  # no report folder, no staging folder, no parent made for it
    monkeypatch.undo()
    first = write_report(results, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == sorted(report_files(results)) and first["markdown"] == out / "report.md"
    monkeypatch.setattr(report_mod, "plot_insertion_deletion", broken)
    with pytest.raises(RuntimeError):
        write_report(results, out, title="second try")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-replaced, nothing left over
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["report"]


# --- membership inference: the attacker's accuracy in the headline -----------------------------------------

def _summary_only(summary: dict, classes=(0,)) -> dict:
    return {"summary": {"n_classes": len(classes), **summary}, "classes": list(classes), "num_classes": 10,
            "per_class": {str(c): dict(summary) for c in classes}}


def test_mia_shows_the_attacker_and_says_when_it_is_at_chance():
    results = {"original": _summary_only({"mia": 0.651, "attack_acc": 0.492}),
               "neg-grad": _summary_only({"mia": 0.12, "attack_acc": 0.71}),
               "wfnet": _summary_only({"mia": 0.0, "attack_acc": 0.496})}
    headers, rows = table1(results)
    col = headers.index("MIA (%) ↓ (attacker's accuracy %)")
    cells = {r[0]: r[col] for r in rows}
    assert cells["**WF-Net**"] == "0.0 (attack 49.6: at chance, says nothing)"
    assert cells["Original model"] == "65.1 (attack 49.2: at chance, says nothing)"
    assert cells["Negative gradients †"] == "12.0 (attack 71.0)"
    verdict = mia_verdict(results)
    assert verdict.startswith("Membership inference says nothing for Original model 49.2%, WF-Net 49.6%")
    assert "read MIA only for the other rows" in verdict
    low = {"wfnet": _summary_only({"mia": 0.3, "attack_acc": 0.40})}  # below chance is no better
    assert table1(low)[1][0][col] == "30.0 (attack 40.0: below chance, says nothing)"
    assert mia_verdict({"x": _summary_only({"mia": 0.3, "attack_acc": 0.56})}).startswith(
        "Membership inference: every attacker beats chance")
    assert per_class_table(results["wfnet"])[1][0][6] == "0.0 (49.6, at chance)"


# --- the gap to retraining -----------------------------------------------------------------------------------

def test_gap_to_retraining_per_metric_and_mean_for_any_method_name(tmp_path):
    metric = lambda acc_r, acc_f, zrf, mia: {"acc_r": acc_r, "acc_f": acc_f, "zrf": zrf, "mia": mia,  # noqa: E731
                                             "attack_acc": 0.7}
    results = {"retrain": _summary_only(metric(0.90, 0.00, 0.50, 0.10)),
               "wfnet": _summary_only(metric(0.80, 0.05, 0.60, 0.35)),
               "salun-v2": _summary_only(metric(0.88, 0.00, 0.47, 0.12))}
    results["salun-v2"]["cost"] = {"all_classes_runs": 10}  # a single-class method: one run per class
    g = gaps(results)
    assert g["wfnet"] == pytest.approx({"acc_r": 10.0, "acc_f": 5.0, "zrf": 10.0, "mia": 25.0, "mean": 12.5})
    assert g["salun-v2"] == pytest.approx({"acc_r": 2.0, "acc_f": 0.0, "zrf": 3.0, "mia": 2.0, "mean": 1.75})
    headers, rows = gap_table(results)
    assert headers == ["Method", "Acc_r gap", "Acc_f gap", "ZRF gap", "MIA gap", "Mean gap ↓"]
    assert rows == [["salun-v2 †", "2.0", "0.0", "3.0", "2.0", "1.8"], ["**WF-Net**", "10.0", "5.0", "10.0", "25.0",
                                                                         "12.5"]]
    assert [r[0] for r in table1(results)[1]] == ["Retrained model", "salun-v2 †", "**WF-Net**"]  # WF-Net last
    more = {m: results["wfnet"] for m in ("wfnet", "zz-new", "ssd", "original", "ft")}
    assert [r[0] for r in table1(more)[1]] == ["Original model", "Fine-tuning †", "SSD †", "zz-new", "**WF-Net**"]
    md = write_report(results, tmp_path / "r")["markdown"].read_text()
    assert "## Gap to retraining" in md and "| **WF-Net** | 10.0 | 5.0 | 10.0 | 25.0 | 12.5 |" in md
    # no retrained method: no gap table; a renamed one is found by its cost record, or named
    assert gaps({"wfnet": results["wfnet"]}) == {}
    alone = write_report({"wfnet": results["wfnet"]}, tmp_path / "r2")["markdown"].read_text()
    assert "## Gap to retraining" not in alone
    renamed = {"scratch": {**results["retrain"], "cost": {"method": "retrain"}}, "wfnet": results["wfnet"]}
    assert gaps(renamed)["wfnet"]["mean"] == pytest.approx(12.5)
    assert gaps(results, "salun-v2")["retrain"]["acc_r"] == pytest.approx(2.0)


# --- the untraining curve --------------------------------------------------------------------------------------

def test_read_history_and_the_untraining_figure(tmp_path, wf_result):
    recs = [{"eval": i + 1, "step": 10 * (i + 1), "epoch": 1, "seconds": 1.5 * i, "train_loss": 3.0 - i,
             "val_objective": 2.5 - 0.5 * i, "val_acc_r": 0.9, "val_acc_f": 0.5 / (i + 1), "best": True,
             "lambda1": 10.0} for i in range(4)]
    (tmp_path / "run").mkdir()
    text = "".join(json.dumps(r) + "\n" for r in recs)
    (tmp_path / "run" / "history.jsonl").write_text(text + '{"eval": 5, "st')  # a torn last line: left out
    hist = read_history(tmp_path / "run")
    assert [r["step"] for r in hist] == [10, 20, 30, 40] and "lambda1" not in hist[0]
    (tmp_path / "bad.jsonl").write_text(text.replace('{"eval": 2', 'oops {"eval": 2'))
    with pytest.raises(ValueError, match=r"bad.jsonl:2 must be a JSON record"):
        read_history(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="must be a `wfkern unlearn` folder with history.jsonl"):
        read_history(tmp_path)
    res = {**wf_result, "unlearn_history": hist}
    assert "untraining_wfnet.png" in report_files({"wfnet": res})
    paths = write_report({"wfnet": res}, tmp_path / "r")
    png = tmp_path / "r" / "untraining_wfnet.png"
    assert png in paths["figures"] and png.read_bytes()[:8] == PNG and png.stat().st_size > 10000
    md = paths["markdown"].read_text()
    assert "![Untraining curve (WF-Net)](untraining_wfnet.png)" in md and "history.jsonl" in md


# --- the filter-class figure ---------------------------------------------------------------------------------

def test_relations_restricted_to_shared_classes_and_the_no_shared_filter_figure(tmp_path):
    rel = {"layer": "features.3", "top_k": 2, "min_classes": 2, "classes": [0, 1, 2],
           "top": {"0": [4, 7], "1": [4, 9], "2": [7, 9]}, "filters": [4, 7, 9],
           "member": [[1, 1, 0], [1, 0, 1], [0, 1, 1]], "relevance": [[0.9, 0.8, 0.1], [0.7, 0.2, 0.6],
                                                                       [0.1, 0.5, 0.4]]}
    sub = _restrict_relations(rel, [0, 1])  # filter 4 is shared by classes 0 and 1; 7 and 9 no longer are
    assert sub["classes"] == [0, 1] and sub["filters"] == [4] and sub["member"] == [[1], [1]]
    assert sub["relevance"] == [[0.9], [0.7]] and sorted(sub["top"]) == ["0", "1"]
    assert relations_explanation(sub).endswith("Here 1 filter is shared.")
    none = _restrict_relations(rel, [0])
    assert none["filters"] == [] and none["member"] == [[]]
    text = relations_explanation(none)
    assert "layer features.3" in text and text.endswith(
        "Here no filter is in the top 2 of 2 classes in this layer: every class relies on its own.")
    path = plot_relations(none, tmp_path / "none.png", ["zero", "one", "two"])
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    shared = plot_relations(rel, tmp_path / "shared.png")
    assert shared.read_bytes()[:8] == PNG
    note = copy.deepcopy(rel)
    note["layer_note"] = "The deepest WF layer, fc, has no filter in the top 2 of two classes; features.3 has."
    assert relations_explanation(note).endswith(note["layer_note"])


def test_report_run_dir_attaches_a_history(tmp_path, wf_result, capsys):
    from wfkern.cli.main import main

    (tmp_path / "res.json").write_text(json.dumps(wf_result))  # results from before histories were stored
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.jsonl").write_text("".join(json.dumps({"step": s, "val_objective": 3.0 / s, "val_acc_r": 0.9,
                                                           "val_acc_f": 0.1 / s}) + "\n" for s in (5, 10)))
    assert main(["report", str(tmp_path / "res.json"), "--run-dir", str(run), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "untraining_wfnet.png").read_bytes()[:8] == PNG
    assert main(["report", str(tmp_path / "res.json"), "--run-dir", f"wfnet={run}", "--out", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / "untraining_wfnet.png").is_file()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "res.json"), "--run-dir", str(tmp_path / "r"), "--out",
                 str(tmp_path / "r3")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"wfkern report: error: --run-dir must be a `wfkern unlearn` folder with history.jsonl, got "
                   f"{str(tmp_path / 'r')!r}") and not (tmp_path / "r3").exists()
