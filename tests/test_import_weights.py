"""`wfkern import` / wfkern.import_model: torchvision and timm weights from state-dict and safetensors files (with
wrapper prefixes, replaced heads, checkpoint dicts) become checkpoints whose model computes the same logits as the
original module; every error path is one line naming what is wrong. Nothing is downloaded: the weights are made
here from randomly initialised models, and the library's pretrained download is replaced."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import wfkern
from wfkern.cli.main import main
from wfkern.models import importing
from wfkern.models.importing import ImportWeightsError, import_model, read_weights
from wfkern.train import load_checkpoint, read_checkpoint_config

X32 = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10).eval()


def _save(state: dict, path, fmt: str, prefix: str = "") -> str:
    state = {prefix + k: v.detach().contiguous().clone() for k, v in state.items()}
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return str(path)


def _import(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["import", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wfkern import: error: "), err
    return lines[0]


@torch.no_grad()
def _same_logits(path: str, module: torch.nn.Module, x: torch.Tensor = X32) -> None:
    model, _ = load_checkpoint(path)
    assert torch.equal(model(x), module(x))


@pytest.mark.parametrize("fmt,suffix,prefix", [
    ("pt", ".pth", ""), ("pt", ".pt", "module."), ("pt", ".pth", "module._orig_mod."),
    ("safetensors", ".safetensors", ""), ("safetensors", ".safetensors", "module."),
    ("safetensors", ".safetensors", "_orig_mod."), ("pt", ".ckpt", "model."),
])
def test_torchvision_resnet18_imports_with_the_same_logits(resnet, tmp_path, capsys, fmt, suffix, prefix):
    weights = _save(resnet.state_dict(), tmp_path / f"w{suffix}", fmt, prefix)
    out = str(tmp_path / "model.safetensors")
    rc, text, _ = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", weights,
                          "--out", out, "--dataset", "imagefolder", "--image-size", "32")
    assert rc == 0 and "head: fc loaded (10 classes)" in text
    assert (f"prefix {prefix!r} stripped" in text) == bool(prefix)
    _same_logits(out, resnet)
    cfg = read_checkpoint_config(out)
    assert (cfg.model, cfg.num_classes, cfg.in_chans, cfg.image_size, cfg.dataset) == \
        ("torchvision:resnet18", 10, 3, 32, "imagefolder")
    assert cfg.preprocess == {} and cfg.extra["imported"] in ("torch state dict", "safetensors file")


@pytest.mark.parametrize("fmt,prefix", [("safetensors", ""), ("pt", "module.")])
def test_timm_vit_imports_with_its_patch_size_read_from_the_weights(vit, tmp_path, capsys, fmt, prefix):
    weights = _save(vit.state_dict(), tmp_path / f"vit.{fmt}", fmt, prefix)
    out = str(tmp_path / "vit.safetensors")
    rc, text, _ = _import(capsys, "--model", "timm:vit_tiny_patch16_224", "--num-classes", "10", "--weights", weights,
                          "--out", out, "--dataset", "cifar10")  # cifar10: 3 channels, 32 px
    assert rc == 0 and "head: head loaded" in text and "patch_size': 16" in text
    cfg = read_checkpoint_config(out)
    assert cfg.model_kwargs == {"patch_size": 16} and (cfg.in_chans, cfg.image_size) == (3, 32)
    _same_logits(out, vit)
    assert "timm's own pretrained weights expect mean (0.5, 0.5, 0.5)" in text  # a hint; not applied


def test_checkpoint_dicts_and_the_library_function(resnet, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in resnet.state_dict().items()},
                "optimizer": {"lr": 0.1}}, str(path))
    state, source = read_weights(str(path))
    assert source == "torch checkpoint['state_dict']" and len(state) == len(resnet.state_dict())
    model, info = import_model("torchvision:resnet18", str(path), num_classes=10, image_size=32)
    assert info.stripped == "module." and info.head == "fc" and not info.head_reset and info.file_classes == 10
    with torch.no_grad():
        assert torch.equal(model(X32), resnet(X32))
    assert wfkern.import_model is import_model


def test_a_head_of_another_size_is_named_and_new_head_replaces_it(tmp_path, capsys):
    torch.manual_seed(3)
    big = torchvision.models.resnet18(num_classes=1000).eval()
    weights = _save(big.state_dict(), tmp_path / "r1000.pt", "pt")
    out = str(tmp_path / "m.safetensors")
    rc, _, err = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", weights,
                         "--out", out)
    assert rc == 2 and _one_line(err) == (
        "wfkern import: error: --num-classes must match the classifier head of the weights (fc: 1000 outputs), got "
        "10; pass --num-classes 1000, or --new-head to start an untrained 10-class head (fine-tune it before "
        "unlearning)")
    rc, text, _ = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", weights,
                          "--out", out, "--new-head")
    assert rc == 0 and "head: fc is NEW and UNTRAINED for 10 classes (the weights' has 1000 outputs)" in text
    model, cfg = load_checkpoint(out)
    assert cfg.extra["head_untrained"] is True and model.fc.weight.shape == (10, 512)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in big.state_dict().items() if not k.startswith("fc."))


def test_timm_head_of_another_size(vit, tmp_path):
    weights = _save(vit.state_dict(), tmp_path / "vit.safetensors", "safetensors")
    with pytest.raises(ImportWeightsError, match=r"num_classes must match the classifier head of the weights "
                                                 r"\(head: 10 outputs\), got 5"):
        import_model("timm:vit_tiny_patch16_224", weights, num_classes=5, image_size=32)
    model, info = import_model("timm:vit_tiny_patch16_224", weights, num_classes=5, image_size=32, new_head=True)
    assert info.head_reset and info.file_classes == 10 and model.head.out_features == 5


def test_missing_unexpected_and_mismatched_keys_are_named(resnet, tmp_path, capsys):
    state = dict(resnet.state_dict())
    for k in [k for k in state if k.startswith("layer4.1.")]:
        del state[k]
    state["extra.weight"] = torch.zeros(2)
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    weights = _save(state, tmp_path / "broken.pt", "pt")
    rc, _, err = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", weights,
                         "--out", str(tmp_path / "m.safetensors"))
    line = _one_line(err)
    assert rc == 2 and line.startswith("wfkern import: error: --weights must fit torchvision:resnet18 (10 classes, "
                                       "3 channels, 224 px), got ")
    n_missing = len([k for k in resnet.state_dict() if k.startswith("layer4.1.") and "num_batches" not in k])
    assert f"{n_missing} missing keys (layer4.1.conv1.weight, layer4.1.bn1.weight, " in line
    assert f"and {n_missing - 4} more)" in line
    assert "1 unexpected key (extra.weight)" in line
    assert "1 shape mismatch (conv1.weight: weights [64, 1, 7, 7], model [64, 3, 7, 7])" in line
    assert line.endswith("check --model, --num-classes, --in-chans, --image-size and --model-arg")
    assert not (tmp_path / "m.safetensors").exists()


def test_a_missing_head_points_to_new_head(resnet, tmp_path, capsys):
    weights = _save({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")},
                    tmp_path / "backbone.safetensors", "safetensors")
    rc, _, err = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", weights,
                         "--out", str(tmp_path / "m.safetensors"))
    assert rc == 2 and "2 missing keys (fc.weight, fc.bias)" in err and "pass --new-head" in err
    rc, text, _ = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", weights,
                          "--out", str(tmp_path / "m.safetensors"), "--new-head")
    assert rc == 0 and "NEW and UNTRAINED" in text


@pytest.mark.parametrize("kind,match", [
    ("pickled", "holds a pickled torchvision.models.resnet.ResNet; save model.state_dict() instead of the model"),
    ("junk", "must be a safetensors file or a torch state dict file (torch.save), got '{path}', which is neither"),
    ("list", "must be a state dict (names -> tensors), got a list in '{path}'"),
    ("dict", "a dict in '{path}' whose entry 'epoch' is not a tensor (int)"),
    ("missing", "--weights must be an existing file or 'default', got '{path}'"),
])
def test_files_that_are_not_state_dicts_are_refused(resnet, tmp_path, capsys, kind, match):
    path = tmp_path / f"{kind}.pt"
    if kind == "pickled":
        torch.save(resnet, str(path))
    elif kind == "junk":
        path.write_bytes(b"hello, not weights")
    elif kind == "list":
        torch.save([torch.zeros(1)], str(path))
    elif kind == "dict":
        torch.save({"epoch": 3, "best": torch.zeros(1)}, str(path))
    rc, _, err = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", str(path),
                         "--out", str(tmp_path / "m.safetensors"))
    assert rc == 2 and match.format(path=path) in _one_line(err)


def test_default_weights_offline_is_a_clear_error(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(importing, "_fetch_pretrained", offline)
    rc, _, err = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", "default",
                         "--out", str(tmp_path / "m.safetensors"))
    line = err.strip().splitlines()[-1]
    assert rc == 2 and line == (
        "wfkern import: error: --weights must be reachable: 'default' fetches torchvision's pretrained weights for "
        "'torchvision:resnet18', got a failure (URLError: <urlopen error [Errno -2] Name or service not known>); "
        "this machine may be offline; save the weights where there is network (a state dict or safetensors file) "
        "and pass --weights FILE")
    rc, _, err = _import(capsys, "--model", "small_cnn", "--num-classes", "10", "--weights", "default",
                         "--out", str(tmp_path / "m.safetensors"))
    assert rc == 2 and "--weights must be a file for a registry model (only timm:<name> and torchvision:<name>" in err


def test_default_weights_replace_the_head_and_record_the_library_preprocessing(tmp_path, capsys, monkeypatch):
    torch.manual_seed(4)
    pretrained = torchvision.models.resnet18(num_classes=1000).eval()  # stands in for the download
    monkeypatch.setattr(importing, "_fetch_pretrained",
                        lambda *a, **k: (pretrained, "torchvision pretrained weights (ResNet18_Weights.IMAGENET1K_V1)"))
    out = str(tmp_path / "m.safetensors")
    rc, text, _ = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", "default",
                          "--out", out, "--dataset", "imagefolder")
    assert rc == 0 and "head: fc is NEW and UNTRAINED for 10 classes (the weights' has 1000 outputs)" in text
    assert "preprocessing (from the library's pretrained weights)" in text
    model, cfg = load_checkpoint(out)
    assert cfg.preprocess == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.875,
                              "interpolation": "bilinear"}
    assert torch.equal(model.layer1[0].conv1.weight, pretrained.layer1[0].conv1.weight)
    rc, text, _ = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "1000", "--weights", "default",
                          "--out", out, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")
    assert rc == 0 and "head: fc loaded (1000 classes)" in text  # a pretrained head of the right size is kept
    _same_logits(out, pretrained)
    assert read_checkpoint_config(out).preprocess["mean"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("argv,match", [
    (["--dataset", "cifar10", "--num-classes", "100"], "--num-classes must be the class count of --dataset cifar10 "
                                                       "(10), got 100"),
    (["--dataset", "digits", "--in-chans", "3"], "--in-chans must be the channels of --dataset digits (1), got 3"),
    (["--dataset", "nope"], "--dataset must be one of"),
    (["--mean", "0.5,0.5"],
     "--mean must be a list of 3 finite numbers in [-1000, 1000] (one per channel), got [0.5, 0.5]"),
    (["--std", "0,1,1"], "--std must be a list of 3 finite numbers > 0"),
    (["--mean", "a,b,c"], "--mean must be comma-separated numbers, one per channel, got 'a,b,c'"),
    (["--crop-pct", "1.5"], "--crop-pct must be a number in (0, 1], got 1.5"),
    (["--image-size", "0"], "--image-size must be >= 1 and <= 4096, got 0"),
    (["--model-arg", "bogus=1"], "--model-arg must be options of 'torchvision:resnet18' (dropout), got 'bogus'"),
])
def test_flags_are_checked_before_any_work(resnet, tmp_path, capsys, argv, match):
    weights = _save(resnet.state_dict(), tmp_path / "w.pt", "pt")
    base = {"--num-classes": "10"}
    args = ["--model", "torchvision:resnet18", "--weights", weights, "--out", str(tmp_path / "m.safetensors")]
    flags = dict(base)
    flags.update(dict(zip(argv[::2], argv[1::2])))
    for k, v in flags.items():
        args += [k, v]
    rc, _, err = _import(capsys, *args)
    assert rc == 2 and match in _one_line(err)


def test_an_imported_checkpoint_is_accepted_by_evaluate(tmp_path, capsys):
    """A registry model's state dict, imported for the digits, then `wfkern evaluate --original` from it."""
    torch.manual_seed(5)
    small = wfkern.models.create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16))
    weights = _save(small.state_dict(), tmp_path / "small.pt", "pt", "module.")
    out = str(tmp_path / "m.safetensors")
    rc, text, _ = _import(capsys, "--model", "small_cnn", "--num-classes", "10", "--weights", weights, "--out", out,
                          "--dataset", "digits", "--model-arg", "widths=[8,16,16]")
    assert rc == 0 and "1x8x8 input, dataset digits" in text
    assert main(["evaluate", "--checkpoint", out, "--original", "--out", str(tmp_path / "ev"), "--metrics", "acc",
                 "--no-progress", "--device", "cpu"]) == 0
    assert "classes evaluated" in capsys.readouterr().out


@torch.no_grad()
def test_three_channel_weights_for_grey_images_go_through_the_channel_adapter(resnet, tmp_path, capsys):
    weights = _save(resnet.state_dict(), tmp_path / "w.pth", "pt", "module.")
    out = str(tmp_path / "m.safetensors")
    rc, text, _ = _import(capsys, "--model", "torchvision:resnet18", "--num-classes", "10", "--weights", weights,
                          "--out", out, "--dataset", "digits")
    assert rc == 0 and "1x8x8 input" in text and "head: model.fc loaded" in text
    model = wfkern.load_model(out)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert type(model).__name__ == "ChannelAdapter" and torch.equal(model(x), resnet(x.expand(-1, 3, -1, -1)))
