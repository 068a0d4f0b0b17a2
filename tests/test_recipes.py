"""Recipes: every plan is a valid `wfkern` command line; the smoke run goes end to end and resumes."""

import json
import os
import sys

import pytest

from wfkern.cli.main import build_parser, main

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from recipes import RECIPES, plan, run_plan  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("smoke", [True, False])
def test_every_recipe_plan_parses(name, smoke, tmp_path):
    ck = str(tmp_path / "pretrained.safetensors") if RECIPES[name].pretrained and not smoke else None
    steps = plan(name, str(tmp_path), smoke=smoke, data_root=None if smoke else "/data", checkpoint=ck)
    parser = build_parser()
    commands = [s.argv[0] for s in steps]
    n_base = len(RECIPES[name].baselines)
    assert commands == (["train"] if ck is None else []) + ["unlearn"] + ["baseline"] * n_base + \
        ["evaluate"] * (2 + n_base) + ["report"]
    for step in steps:
        args = parser.parse_args(step.argv)
        assert args.command == step.argv[0]
        if step.argv[0] == "evaluate" and smoke:
            assert args.classes == "0,1" and args.rt_max_epochs == 2 and args.dataset == "digits"
    assert len(steps[-1].argv) == 1 + (2 + n_base) + 4  # report: every evaluated method


def test_pretrained_recipe_needs_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="checkpoint must be the pretrained model for 'imagenet'"):
        plan("imagenet", str(tmp_path), data_root="/data")
    with pytest.raises(ValueError, match="name must be one of"):
        plan("mnist-alexnet", str(tmp_path))


def _in_process(argv):
    return main(argv)


def _check_run(out):
    report = (out / "report" / "report.md").read_text()
    for row in ("Original model", "Retrained model", "Random labels", "Negative gradients", "WF-Net"):
        assert f"| {row}" in report or f"| **{row}**" in report
    for png in (out / "report").glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    assert sorted(p.name for p in (out / "report").glob("*.png")) == [  # the untraining curve among them
        "insertion_deletion_wfnet.png", "per_class_accuracy.png", "relations_wfnet.png", "untraining_wfnet.png"]
    wf = json.loads((out / "eval" / "wfnet" / "results.json").read_text())
    assert wf["classes"] == [0, 1] and wf["cost"]["n_files"] == 1 and wf["cost"]["all_classes_runs"] == 1
    assert 0.0 <= wf["summary"]["acc_f"] <= 1.0 and wf["summary"]["insertion_auc"] is not None
    retrain = json.loads((out / "eval" / "retrain" / "results.json").read_text())
    assert retrain["cost"]["n_runs"] == 2 and retrain["cost"]["all_classes_runs"] == 10
    assert sorted(os.listdir(out / "baselines" / "retrain" / "models")) == \
        ["class_00000.safetensors", "class_00001.safetensors"]


def test_smoke_recipe_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "run"
    steps = plan("mnist-resnet18", str(out), smoke=True, threads=2)
    assert run_plan(steps, runner=_in_process, log=lambda m: None) == 0
    _check_run(out)
    ran = []
    assert run_plan(steps, runner=lambda argv: ran.append(argv[0]) or 0, log=lambda m: None) == 0
    assert ran == ["report"]  # every other step's output exists: nothing is recomputed


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n in RECIPES if n != "mnist-resnet18"))
def test_every_recipe_smoke_end_to_end(name, tmp_path):
    out = tmp_path / "run"
    assert run_plan(plan(name, str(out), smoke=True, threads=2), runner=_in_process, log=lambda m: None) == 0
    if RECIPES[name].baselines:
        _check_run(out)
    else:
        assert (out / "report" / "report.html").exists()
