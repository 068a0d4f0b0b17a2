"""wfkern export --format pt2: torch.export of the model with a forget input, and its AOTInductor package loaded in a
process without wfkern's Python code."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

import wfkern
from _export_models import NUM_CLASSES, inputs, write_checkpoint_and_filters
from wfkern.cli.main import main
from wfkern.export import custom_ops, export_program, load_source

pytest.importorskip("timm")

NC = NUM_CLASSES
ROWS = [[3, 7], [-1, -1], [2, 2], [0, -1], [NC, 1], [-3, -1]]  # sets, repeats, nothing, out of range (NaN)


def _want(wf, x, rows):
    f = torch.tensor(rows)
    bad = ((f < -1) | (f >= NC)).any(dim=1)
    with torch.no_grad():
        want = torch.full((len(rows), NC), float("nan"))
        want[~bad] = wf.eval()(x[~bad], forget=f[~bad])
    return want


def _close(got, want):
    nan = torch.isnan(want).all(dim=1)
    assert torch.isnan(got[nan]).all() and not torch.isnan(got[~nan]).any()
    torch.testing.assert_close(got[~nan], want[~nan], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module", params=["resnet18", "vit_tiny"])
def source(request, tmp_path_factory):
    checkpoint, filters, wf = write_checkpoint_and_filters(request.param, tmp_path_factory.mktemp("pt2"))
    return request.param, load_source(checkpoint, filters), wf


def test_torch_export_matches_wfkern_at_any_batch_and_set_size(source):
    name, src, wf = source
    program = export_program(src)
    module = program.module()
    for rows in (ROWS, [[5]], [[1, 2, 3], [-1, -1, -1], [4, 4, 4]]):
        x = inputs(len(rows), seed=len(rows))
        _close(module(x, torch.tensor(rows)), _want(wf, x, rows))
    # Convolutions trace as tensor ops (inductor fuses them); a ViT's qkv epilogue keeps wfkern's op.
    assert custom_ops(program) == ([] if name == "resnet18" else ["wfkern::mask_epilogue"])
    if name == "vit_tiny":  # a ResNet has nothing to decompose
        assert custom_ops(export_program(src, decompose=True)) == []


def test_single_label_program(source):
    name, src, wf = source
    if name != "vit_tiny":
        pytest.skip("once is enough")
    module = export_program(src, forget_input="single").module()
    x = inputs(5)
    _close(module(x, torch.tensor([3, -1, 0, NC, 9])), _want(wf, x, [[3], [-1], [0], [NC], [9]]))


# Loads a .pt2 with torch alone (wfkern's Python package unimportable); the fused op's library by path when asked.
FRESH = textwrap.dedent("""
    import sys
    sys.modules["wfkern"] = None
    import json, torch
    from safetensors.torch import load_file, save_file
    path, io, library = sys.argv[1], load_file(sys.argv[2]), sys.argv[3]
    if library:
        torch.ops.load_library(library)
    runner = torch._inductor.aoti_load_package(path)
    outs = {k.replace("x", "out"): runner(io[k], io[k.replace("x", "f")]) for k in io if k.startswith("x")}
    save_file({k: v.contiguous() for k, v in outs.items()}, sys.argv[4])
    print(json.dumps(runner.get_metadata().get("wfkern")))
""")


@pytest.mark.slow  # AOTInductor compiles C++: about 30-60 s for this two-block ViT on 2 cores
@pytest.mark.parametrize("decompose", [False, True])
def test_aoti_package_in_a_fresh_process(tmp_path, decompose):
    checkpoint, filters, wf = write_checkpoint_and_filters("vit_tiny", tmp_path)
    out = tmp_path / "model.pt2"
    argv = ["export", "--checkpoint", checkpoint, "--gates", filters, "--out", str(out), "--threads", "2"]
    assert main(argv + (["--decompose"] if decompose else [])) == 0
    cases = [ROWS, [[4, -1]], [[-1, -1]] * 3]
    io = {}
    for i, rows in enumerate(cases):
        io[f"x{i}"], io[f"f{i}"] = inputs(len(rows), seed=20 + i), torch.tensor(rows)
    save_file(io, tmp_path / "io.safetensors")
    library = "" if decompose else glob.glob(os.path.join(os.path.dirname(wfkern.__file__), "_C*.so"))[0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", FRESH, str(out), str(tmp_path / "io.safetensors"), library,
                           str(tmp_path / "outs.safetensors")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = load_file(tmp_path / "outs.safetensors")
    for i, rows in enumerate(cases):
        _close(outs[f"out{i}"], _want(wf, io[f"x{i}"], rows))
    record = json.loads(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert record["artifact"] == "pt2" and record["custom_ops"] == ([] if decompose else ["wfkern::mask_epilogue"])
