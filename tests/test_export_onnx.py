"""wfkern export --format onnx: onnxruntime, in a process without wfkern, gives wfkern's logits for every kind of row."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from _export_models import NUM_CLASSES, inputs, write_checkpoint_and_filters
from wfkern.cli.main import main

pytest.importorskip("timm")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# Runs the exported file with onnxruntime and numpy only: wfkern (and so the training code) cannot be imported.
NO_WFKERN = textwrap.dedent("""
    import sys
    sys.modules["wfkern"] = None
    import json, numpy as np, onnxruntime
    path, cases = sys.argv[1], np.load(sys.argv[2])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    outs = {}
    for i in range(len(cases.files) // 2):
        outs[f"out{i}"] = session.run(None, {"input": cases[f"x{i}"], "forget": cases[f"f{i}"]})[0]
    np.savez(sys.argv[3], **outs)
    print(json.dumps({"inputs": shapes, "metadata": session.get_modelmeta().custom_metadata_map}))
""")

NC = NUM_CLASSES
# ResNet-18's export takes 15-35 s on a 2-core machine: slow. (batch size, forget rows): mixed single labels, sets with repeats, rows of -1, and labels outside [-1, Nc).
CASES = [
    [[3], [-1], [0], [NC - 1], [5]],
    [[3, 7], [-1, -1], [2, 2], [0, -1], [9, 1]],
    [[1, 2, 3], [-1, -1, -1], [4, 4, -1], [NC, 0, 0], [-2, -1, -1], [6, 6, 6]],
    [[-1]],
    [[8, 3]],
]


def _run_without_wfkern(path, cases, tmp_path):
    arrays = {}
    for i, rows in enumerate(cases):
        arrays[f"x{i}"] = inputs(len(rows), seed=10 + i).numpy()
        arrays[f"f{i}"] = np.asarray(rows, dtype=np.int64)
    np.savez(tmp_path / "cases.npz", **arrays)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", NO_WFKERN, str(path), str(tmp_path / "cases.npz"),
                           str(tmp_path / "outs.npz")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return arrays, np.load(tmp_path / "outs.npz"), json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=[pytest.param("resnet18", marks=pytest.mark.slow), "vit_tiny"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"onnx_{request.param}")
    checkpoint, filters, wf = write_checkpoint_and_filters(request.param, folder)
    out = folder / f"{request.param}.onnx"
    assert main(["export", "--checkpoint", checkpoint, "--gates", filters, "--out", str(out)]) == 0
    return out, wf.eval(), folder


def test_onnxruntime_matches_wfkern(exported, tmp_path):
    path, wf, _ = exported
    arrays, outs, info = _run_without_wfkern(path, CASES, tmp_path)
    assert info["inputs"]["forget"][0] == info["inputs"]["input"][0] == "batch"  # one dynamic batch axis
    assert isinstance(info["inputs"]["forget"][1], str)  # and a dynamic set size
    for i, rows in enumerate(CASES):
        x, f = torch.from_numpy(arrays[f"x{i}"]), torch.tensor(rows)
        got = torch.from_numpy(outs[f"out{i}"])
        bad = ((f < -1) | (f >= NC)).any(dim=1)
        assert torch.isnan(got[bad]).all() and not torch.isnan(got[~bad]).any(), (i, rows)
        with torch.no_grad():
            want = wf(x[~bad], forget=f[~bad]) if (~bad).any() else None
            plain = wf(x)
        if want is not None:
            torch.testing.assert_close(got[~bad], want, atol=1e-5, rtol=1e-5)
        nothing = (f == -1).all(dim=1)
        torch.testing.assert_close(got[nothing], plain[nothing], atol=1e-5, rtol=1e-5)  # -1 rows: the original
        forgetting = ~nothing & ~bad
        if forgetting.any():  # and the gates did change the rows that forget something
            assert (got[forgetting] - plain[forgetting]).abs().max() > 1e-3


def test_the_graph_is_standard_onnx_with_the_record(exported):
    path, wf, _ = exported
    model = onnx.load(str(path))
    domains = {node.domain for node in model.graph.node} | {
        node.domain for fn in model.functions for node in fn.node}
    assert domains <= {"", "ai.onnx"}, domains  # no custom op: the epilogue is Gather / Sigmoid / ReduceProd / Mul
    ops = [node.op_type for node in model.graph.node]
    assert {"Sigmoid", "ReduceProd", "Where", "Mul"} <= set(ops) and {"Gather", "GatherND"} & set(ops), set(ops)
    gate_tables = sum(layer.alpha_b is None and 1 or 2 for layer in wf.wf_layers().values())
    assert ops.count("Sigmoid") == gate_tables  # one gate table per alpha matrix, nothing else
    record = json.loads({p.key: p.value for p in model.metadata_props}["wfkern"])
    assert record["artifact"] == "onnx" and record["num_classes"] == NC and record["forget_input"] == "set"


def test_single_label_input(exported):
    path, wf, folder = exported
    if "vit" not in path.name:
        pytest.skip("once is enough: the ViT exports fastest")
    checkpoint, filters = str(folder / "vit_tiny.safetensors"), str(folder / "vit_tiny_filters.safetensors")
    single = folder / "single.onnx"
    assert main(["export", "--checkpoint", checkpoint, "--gates", filters, "--out", str(single),
                 "--forget-input", "single"]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(single), providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()[1].shape) == 1
    x, f = inputs(4), torch.tensor([3, -1, NC + 5, 0])
    got = torch.from_numpy(session.run(None, {"input": x.numpy(), "forget": f.numpy()})[0])
    with torch.no_grad():
        want = wf(x, forget=torch.tensor([3, -1, -1, 0]))
    keep = torch.tensor([True, True, False, True])
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)
    assert torch.isnan(got[2]).all()

