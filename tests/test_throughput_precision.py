"""--precision bf16 / wfkern.precision: bfloat16 autocast on the CPU (the CUDA path is the same autocast), while
the weights, the WF gates and their optimiser state stay float32; channels-last only for CNNs on CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

import wfkern
from wfkern.cli.main import main
from wfkern.models import create_model
from wfkern.train import ModelConfig, load_checkpoint, save_checkpoint
from wfkern.train.precision import check_precision, use_channels_last

TINY = {"widths": [8, 16, 16]}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1, 8, **TINY)
    path = str(tmp_path / "model.safetensors")
    save_checkpoint(path, model, ModelConfig("small_cnn", 10, 1, 8, TINY, "digits", 0))
    return path


def _dtypes(path: str) -> dict[str, torch.dtype]:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k).dtype for k in f.keys()}


def test_library_context_autocasts_and_keeps_gates_float32():
    torch.manual_seed(0)
    wf = wfkern.patch(create_model("small_cnn", 10, 1, 8, **TINY), num_classes=10)
    opt = torch.optim.Adam(wf.gate_parameters(), lr=0.1)
    x = torch.randn(4, 1, 8, 8)
    with wfkern.precision("bf16", device="cpu") as mode:
        assert mode == "bf16"
        out = wf(x, forget=torch.tensor([0, 1, -1, 3]))
        assert out.dtype == torch.bfloat16
        out.float().logsumexp(1).mean().backward()
        opt.step()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in wf.gate_parameters())
    assert all(t.dtype == torch.float32 for s in opt.state.values() for t in s.values() if t.dim() > 0)
    with wfkern.precision("fp32"):
        assert wf(x).dtype == torch.float32
    assert wf(x).dtype == torch.float32  # nothing lingers after the block


def test_precision_is_checked():
    with pytest.raises(ValueError, match="wfkern.precision: precision must be one of fp32, bf16, got 'fp16'"):
        with wfkern.precision("fp16"):
            pass
    with pytest.raises(ValueError, match="precision 'bf16' must run on cuda or cpu"):
        check_precision("bf16", "meta")


def test_channels_last_only_for_cnns_in_bf16_on_cuda():
    cnn = create_model("small_cnn", 10, 1, 8, **TINY)
    assert not use_channels_last(cnn, "bf16", "cpu") and not use_channels_last(cnn, "fp32", "cuda")
    assert use_channels_last(cnn, "bf16", "cuda")  # a layout change only: done on the CPU here, no GPU needed
    conv = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)][-1]  # 8+ input channels: the layouts differ
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    vit = create_model("vit_t", 10, 3, 32, depth=1, embed_dim=24, num_heads=2)  # one conv: the patch embedding
    assert not use_channels_last(vit, "bf16", "cuda")


def test_unlearn_bf16_on_the_cpu_keeps_gates_and_optimiser_float32(checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["unlearn", "--checkpoint", checkpoint, "--out-dir", str(out), "--max-epochs", "1",
                 "--evals-per-epoch", "1", "--batch-size", "64", "--optimizer", "adam", "--lr", "0.1",
                 "--no-progress", "--device", "cpu", "--precision", "bf16"]) == 0
    assert "untrained" in capsys.readouterr().out
    filters = _dtypes(str(out / "gates.safetensors"))
    assert filters and set(filters.values()) == {torch.float32}
    state = _dtypes(str(out / "unlearn_state.safetensors"))
    optim = {k: v for k, v in state.items() if k.startswith("optim/")}
    assert any(k.endswith("exp_avg") for k in optim)  # Adam's moments are there, and float32
    assert {v for k, v in optim.items() if not k.endswith("step")} == {torch.float32}
    assert {v for k, v in state.items() if not k.startswith("optim/")} <= {torch.float32, torch.int64}


def test_train_and_evaluate_run_in_bf16_on_the_cpu(tmp_path, capsys):
    ck = tmp_path / "m.safetensors"
    assert main(["train", "--model-arg", "widths=[8,16,16]", "--epochs", "1", "--no-progress", "--device", "cpu",
                 "--precision", "bf16", "--out", str(ck)]) == 0
    model, _ = load_checkpoint(str(ck))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast never changes the weights
    assert main(["evaluate", "--checkpoint", str(ck), "--original", "--out", str(tmp_path / "ev"), "--metrics", "acc",
                 "--no-progress", "--device", "cpu", "--precision", "bf16"]) == 0
    assert "classes evaluated" in capsys.readouterr().out


def test_cli_precision_choices(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["unlearn", "--checkpoint", "x", "--out-dir", str(tmp_path), "--precision", "fp16"])
    assert e.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
