"""Reports: tables carry the evaluated numbers, the HTML is self-contained, the figures are real PNGs."""

import base64
import re

import pytest

from wfkern.metrics import EvalSettings, PerClassModels, evaluate
from wfkern.reports import per_class_table, table1, table2, to_html, to_markdown, write_report
from wfkern.reports.tables import fmt_bytes, fmt_seconds

from _toy_wf import evaluated_wf
from test_metrics_accuracy import ORIGINAL, PREDS, Lookup, _data

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results():
    toy = evaluate(PerClassModels(Lookup(ORIGINAL), {c: Lookup(p) for c, p in PREDS.items()}, method="retrain"),
                   _data(), progress=False, settings=EvalSettings(metrics=("acc",)), class_names=["zero", "one", "two"])
    toy["cost"] = {"method": "retrain", "all_classes_runs": 3, "all_classes_seconds": 90.0,
                   "all_classes_bytes": 3 * 2**20}
    return {"retrain": toy, "wfnet": evaluated_wf(insdel_steps=12)}


def test_formatters():
    assert (fmt_bytes(512), fmt_bytes(2048), fmt_bytes(3 * 2**20)) == ("512 B", "2.0 KiB", "3.0 MiB")
    assert (fmt_seconds(12.0), fmt_seconds(300.0), fmt_seconds(7200.0)) == ("12.0 s", "5.0 min", "2.0 h")


def test_table1_rows_hold_the_evaluated_numbers(results):
    headers, rows = table1(results)
    assert headers[:5] == ["Method", "Acc_r ↑", "Acc_f ↓", "ZRF ↑", "RT ↑"]
    retrain, wf = rows
    # toy: Acc_f (1/3 + 0 + 1/3) / 3 = 22.2 %, Acc_r (3/5 + 1 + 4/5) / 3 = 80.0 %
    assert retrain[:3] == ["Retrained model", "80.0", "22.2"]
    assert retrain[-3:] == ["3", "90.0 s", "3.0 MiB"]
    assert wf[0] == "**WF-Net**" and wf[1:3] == ["100.0", "0.0"] and wf[-3:] == ["1", "12.0 s", "2.0 KiB"]
    md = to_markdown((headers, rows))
    assert md.splitlines()[2].startswith("| Retrained model | 80.0 | 22.2 |")
    assert "<b>WF-Net</b>" in to_html((headers, rows))


def test_table2_and_per_class(results):
    headers, rows = table2(results)
    assert rows == [["**WF-Net**", f"{results['wfnet']['summary']['insertion_auc']:.2f}",
                     f"{results['wfnet']['summary']['deletion_auc']:.2f}", "3"]]
    assert float(rows[0][1]) > 0.9 and float(rows[0][2]) < 0.1
    headers, rows = per_class_table(results["retrain"])
    assert [r[0] for r in rows] == ["zero", "one", "two"]
    assert rows[0][1:4] == ["66.7", "60.0", "33.3"]


def test_write_report_is_self_contained(tmp_path, results):
    paths = write_report(results, tmp_path, title="toy report")
    names = sorted(p.name for p in paths["figures"])
    assert names == ["insertion_deletion_wfnet.png", "per_class_accuracy.png", "relations_wfnet.png"]
    for p in paths["figures"]:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000
    page = paths["html"].read_text()
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(imgs) == 3 and all(base64.b64decode(i)[:8] == PNG for i in imgs)
    assert not re.search(r"src=['\"](?!data:)", page)  # nothing fetched from elsewhere
    md = paths["markdown"].read_text()
    assert md.startswith("# toy report") and "## Table 2: insertion / deletion" in md
    assert "![Per-class accuracy with each class forgotten](per_class_accuracy.png)" in md
    with pytest.raises(ValueError, match="wfkern.write_report: results must hold at least one method"):
        write_report({}, tmp_path)


def test_load_results_names_the_file_and_the_key(tmp_path, results):
    import json

    from wfkern.reports import load_results

    good = tmp_path / "good.json"
    good.write_text(json.dumps(results["wfnet"]))
    assert load_results(good)["summary"]["n_classes"] == 3  # a real evaluate result passes the checks
    cases = {"syntax.json": ('{"summary": [', "must be JSON, got a syntax error at line 1"),
             "list.json": ("[]", "must hold a `wfkern evaluate` result (a JSON object), got a JSON list"),
             "foreign.json": ('{"method": "x"}', "key 'summary' of"),
             "curves.json": (None, "key 'per_class.0.insdel.deletion_curve' of")}
    bad_curves = json.loads(json.dumps(results["wfnet"]))
    bad_curves["per_class"]["0"]["insdel"]["deletion_curve"] = [0.5]
    for name, (text, match) in cases.items():
        path = tmp_path / name
        path.write_text(text if text is not None else json.dumps(bad_curves))
        with pytest.raises(ValueError) as e:
            load_results(path)
        msg = str(e.value)
        assert msg.startswith("wfkern.load_results: ") and str(path) in msg and match in msg, msg
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="must be UTF-8 JSON text"):
        load_results(tmp_path / "bytes.json")


def test_write_report_checks_its_files_first_and_writes_figures_atomically(tmp_path, results):
    out = tmp_path / "r"
    (out / "report.html").mkdir(parents=True)
    with pytest.raises(ValueError, match="report.html must be a file path, got a directory"):
        write_report(results, out)
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]  # no figure drawn before the check
    (out / "report.html").rmdir()
    paths = write_report(results, out)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp")]  # atomic writes leave no temp files
    assert len(paths["figures"]) == 3
