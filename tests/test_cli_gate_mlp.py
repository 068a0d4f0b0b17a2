"""`wfkern unlearn --gate-mlp {auto,qkv,fc1,all}`: where a ViT's gates sit, and how a resumed run keeps its placement."""

from __future__ import annotations

import pytest

from wfkern.cli.main import main
from wfkern.patch import gates_layer_names

VIT = ["--model", "vit_t", "--model-arg", "depth=1", "--model-arg", "embed_dim=12", "--model-arg", "num_heads=2",
       "--model-arg", "patch_size=4"]
FAST = ["--max-epochs", "1", "--max-steps", "2", "--evals-per-epoch", "1", "--no-progress"]
# The linear layers each placement gates in a timm block (its patch embedding is a conv, gated by every one).
PLACED = {"qkv": {"attn.qkv"}, "fc1": {"attn.qkv", "mlp.fc1"}, "all": {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}}


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(capsys, argv, match):
    rc, _, err = _run(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("wfkern unlearn: error: ") and match in lines[0], err


def _linear_gates(out_dir):
    """The block-level linear layers of the run's gates file ({"attn.qkv", ...})."""
    gates = [p for p in out_dir.iterdir() if p.suffix == ".safetensors" and p.name != "unlearn_state.safetensors"]
    assert len(gates) == 1, sorted(p.name for p in out_dir.iterdir())
    return {".".join(n.split(".")[-2:]) for n in gates_layer_names(gates[0]) if n.startswith("blocks.")}


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    assert main(["train", *VIT, "--epochs", "1", "--out", str(path), "--no-progress"]) == 0
    return str(path)


@pytest.mark.parametrize("flag,placement", [([], "all"), (["--gate-mlp"], "fc1"), (["--gate-mlp", "qkv"], "qkv")])
def test_gate_mlp_places_the_gates_and_a_resume_keeps_them(vit_checkpoint, tmp_path, capsys, flag, placement):
    """The default (auto) gates every linear layer of a ViT block, a bare --gate-mlp the MLP's first layer (as
    before it took a value). A resume continues the run's placement under auto (a qkv-only or fc1 run of an older
    wfkern included) or the same value; another value is refused up front in one line, the folder left as it was."""
    out_dir = tmp_path / "run"
    rc, out, _ = _run(capsys, "unlearn", "--checkpoint", vit_checkpoint, "--out-dir", str(out_dir), *flag, *FAST)
    assert rc == 0 and "untrained 2 steps (step cap)" in out
    assert _linear_gates(out_dir) == PLACED[placement]
    other = "all" if placement != "all" else "qkv"
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    _one_line_error(capsys, ["unlearn", "--checkpoint", vit_checkpoint, "--out-dir", str(out_dir), "--resume",
                             "--gate-mlp", other, *FAST],
                    f"--gate-mlp must match the run being resumed, which was started with {placement}, got "
                    f"{other}; leave it out (auto) to continue with the run's own")
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    for again in ([], flag) if flag else ([],):  # auto, and the flag it was started with
        rc, out, _ = _run(capsys, "unlearn", "--checkpoint", vit_checkpoint, "--out-dir", str(out_dir), "--resume",
                          *again, *FAST)
        assert rc == 0 and "untrained 2 steps (step cap)" in out, out
        assert _linear_gates(out_dir) == PLACED[placement]


def test_gate_mlp_refuses_other_names(capsys):
    with pytest.raises(SystemExit) as e:
        main(["unlearn", "--checkpoint", "x", "--out-dir", "y", "--gate-mlp", "fc2"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip().splitlines()[-1] == (
        "wfkern unlearn: error: argument --gate-mlp: invalid choice: 'fc2' (choose from 'auto', 'qkv', 'fc1', 'all')")
