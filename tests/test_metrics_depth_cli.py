"""The depth metrics through the command line: `wfkern evaluate --metrics probe,retain_ft,mia_eff` on a WF model and
a baseline, their settings flags, and `wfkern report`'s depth table and manifest."""

from __future__ import annotations

import json

from wfkern.cli.main import main


def test_depth_metrics_from_the_command_line(tmp_path, capsys):
    ck = str(tmp_path / "model.safetensors")
    quick = ["--no-progress", "--threads", "1"]
    assert main(["train", "--model-arg", "widths=[8,16,16]", "--epochs", "2", "--out", ck, *quick]) == 0
    assert main(["unlearn", "--checkpoint", ck, "--out-dir", str(tmp_path / "wf"), "--max-epochs", "1", *quick]) == 0
    assert main(["baseline", "--method", "scrub", "--checkpoint", ck, "--out-dir", str(tmp_path / "b"), "--classes",
                 "0", "--epochs", "1", *quick]) == 0
    ev = ["evaluate", "--checkpoint", ck, "--classes", "0", "--metrics", "acc,probe,retain_ft,mia_eff",
          "--probe-layers", "head,features.0", "--rft-epochs", "1", "--rft-part", "head", *quick]
    capsys.readouterr()
    assert main([*ev, "--gates", str(tmp_path / "wf" / "gates.safetensors"), "--out", str(tmp_path / "e_wf")]) == 0
    assert "Depth: a linear probe on the features still finds" in capsys.readouterr().out
    assert main([*ev, "--baseline-dir", str(tmp_path / "b"), "--out", str(tmp_path / "e_b")]) == 0
    res = json.loads((tmp_path / "e_wf" / "results.json").read_text())
    row = res["per_class"]["0"]
    assert set(row["probe"]) == {"head", "features.0"} and row["probe"]["head"]["layer"] == "head:input"
    assert row["probe_acc_f"] == row["probe"]["head"]["acc_f"] and len(row["rft_history"]) == 2
    assert 0.0 <= row["mia_eff"] <= 1.0 and res["settings"]["rft_part"] == "head"
    assert res["manifest"]["data"]["test"]["covers"] == "inputs+labels"
    capsys.readouterr()
    assert main(["report", str(tmp_path / "e_wf"), str(tmp_path / "e_b"), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "Depth of forgetting" in out and "| SCRUB † |" in out and "Manifest:" in out
    assert res["manifest"]["data"]["train"]["sha256"] in out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Depth of forgetting" in md and "## Manifest" in md
    capsys.readouterr()
    for extra, match in ((["--probe-layers", "nope"], "probe_layers must name modules of the model"),
                         (["--rft-part", "body"], "invalid choice: 'body'")):
        try:
            rc = main([*ev, "--original", "--out", str(tmp_path / "bad"), *extra])
        except SystemExit as e:  # argparse's own refusal
            rc = e.code
        err = capsys.readouterr().err
        assert rc == 2 and match in err and "Traceback" not in err, err
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())  # refused before any work
