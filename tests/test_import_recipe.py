"""The ImageNet recipe runs from imported torchvision / timm weights: `wfkern import`, then unlearn, evaluate and
report, end to end on a tiny generated ImageFolder (smoke budgets; workers on)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from wfkern.cli.main import build_parser, main
from wfkern.train import read_checkpoint_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from recipes import plan, run_plan  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """ImageNet layout: train/<class>/ and val/<class>/ (val is the test split; val for untraining is carved)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 4)):
        for c in ("n01", "n02", "n03"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return str(root)


def test_imported_recipe_plan(tmp_path):
    steps = plan("imagenet", str(tmp_path), data_root="/data/imagenet", weights="resnet50.pth",
                 model="torchvision:resnet50", num_workers=8, precision="bf16")
    assert [s.name for s in steps] == ["import", "unlearn", "evaluate original", "evaluate wfnet", "report"]
    assert steps[0].argv == ["import", "--model", "torchvision:resnet50", "--num-classes", "1000", "--weights",
                             "resnet50.pth", "--out", os.path.join(str(tmp_path), "model.safetensors"),
                             "--dataset", "imagefolder", "--image-size", "224"]
    parser = build_parser()
    for step in steps:
        args = parser.parse_args(step.argv)
        if step.name != "report" and step.name != "import":
            assert args.num_workers == 8 and args.precision == "bf16" and args.data_root == "/data/imagenet"
    original, wfnet = (parser.parse_args(s.argv) for s in steps[2:4])
    assert original.metrics == "acc,zrf" and wfnet.metrics == "acc,zrf,insdel"  # insdel needs the gates
    assert wfnet.sample_classes == 100 and wfnet.test_per_class == 5
    with pytest.raises(ValueError, match="checkpoint must be None when weights are imported"):
        plan("imagenet", str(tmp_path), data_root="/d", weights="w.pth", checkpoint="m.safetensors")
    with pytest.raises(ValueError, match="checkpoint must be the pretrained model for 'imagenet', got None; or pass "
                                         "weights"):
        plan("imagenet", str(tmp_path), data_root="/d")


@pytest.mark.parametrize("arch", ["torchvision:resnet18",
                                  pytest.param("timm:vit_tiny_patch16_224", marks=pytest.mark.slow)])
def test_imagenet_recipe_end_to_end_from_imported_weights(tree, tmp_path, arch):
    torch.manual_seed(0)
    if arch.startswith("timm:"):
        timm = pytest.importorskip("timm")
        module = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=3)
    else:
        import torchvision

        module = torchvision.models.resnet18(num_classes=3)
    weights = tmp_path / "weights.pth"
    torch.save({"module." + k: v for k, v in module.state_dict().items()}, str(weights))
    out = tmp_path / "run"
    steps = plan("imagenet", str(out), smoke=True, data_root=tree, weights=str(weights), model=arch, num_classes=3,
                 image_size=32, threads=2, num_workers=2)
    assert run_plan(steps, runner=main, log=lambda m: None) == 0
    cfg = read_checkpoint_config(str(out / "model.safetensors"))
    assert (cfg.model, cfg.num_classes, cfg.image_size, cfg.dataset) == (arch, 3, 32, "imagefolder")
    wf = json.loads((out / "eval" / "wfnet" / "results.json").read_text())
    assert wf["classes"] == [0, 1] and wf["summary"]["insertion_auc"] is not None
    assert 0.0 <= wf["summary"]["acc_f"] <= 1.0 and 0.0 <= wf["summary"]["acc_r"] <= 1.0
    original = json.loads((out / "eval" / "original" / "results.json").read_text())
    assert original["summary"]["acc_r"] is not None and original["summary"]["insertion_auc"] is None
    report = (out / "report" / "report.md").read_text()
    assert "| Original model" in report and "WF-Net" in report and "(smoke run)" in report
    assert (out / "report" / "report.html").exists()
