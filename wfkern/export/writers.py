"""The three artifacts: baked plain weights (safetensors), ONNX with a forget input, an AOTInductor package (pt2)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from wfkern._atomic import atomic_write
from wfkern.export.forget_input import ForgetInput
from wfkern.export.source import EXPORT_FORMAT, ExportSource
from wfkern.models import ChannelAdapter
from wfkern.ops import use_reference
from wfkern.patch.bake import ForgetSet, bake, forget_set

__all__ = ["FORGET_INPUTS", "VERIFY_TOL", "custom_ops", "example_inputs", "export_onnx", "export_program", "export_pt2",
           "export_weights"]

FORGET_INPUTS = ("set", "single")  # forget as int64 (B, K) or (B,)
VERIFY_TOL = 1e-4  # |artifact - wfkern| allowed when an export checks what it wrote (fp32; the tests ask 1e-5)


def _check_target(path: str, overwrite: bool, where: str) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{where}: path must be a file path, got a directory {path!r}")
    if os.path.lexists(path) and not overwrite:
        raise ValueError(f"{where}: path must not exist yet, got {path!r}, which does; pass overwrite=True "
                         "(--overwrite) to replace it")
    return path


def _check_forget_input(forget_input: str, where: str) -> None:
    if forget_input not in FORGET_INPUTS:
        raise ValueError(f"{where}: forget_input must be one of {', '.join(FORGET_INPUTS)}, got {forget_input!r}")


def example_inputs(source: ExportSource, batch: int = 2, forget_input: str = "set") -> Tuple[Tensor, Tensor]:
    """(x, forget) to trace with: a seeded random batch of the checkpoint's input size and valid labels."""
    cfg = source.config
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_chans, cfg.image_size, cfg.image_size, generator=generator)
    labels = torch.arange(2 * batch).remainder(cfg.num_classes).view(batch, 2)
    labels[0, 1] = -1
    return x, (labels if forget_input == "set" else labels[:, 0].contiguous())


def _check_inputs(source: ExportSource, forget_input: str) -> Tuple[Tensor, Tensor]:
    """A batch that covers every kind of row: one label, a set, a repeated class, nothing, a bad label."""
    cfg = source.config
    num_classes = cfg.num_classes
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, cfg.in_chans, cfg.image_size, cfg.image_size, generator=generator)
    sets = torch.tensor([[0, -1], [1 % num_classes, 2 % num_classes], [3 % num_classes, 3 % num_classes], [-1, -1],
                         [num_classes, 0]])  # the last row holds a label outside [-1, Nc)
    return x, (sets if forget_input == "set" else sets[:, 0].contiguous())


def _compare(got: Tensor, want: Tensor, what: str) -> float:
    """Max |got - want| over the valid rows; NaN rows must match. RuntimeError naming ``what`` otherwise."""
    nan_got, nan_want = torch.isnan(got).all(dim=1), torch.isnan(want).all(dim=1)
    diff = float((got[~nan_want] - want[~nan_want]).abs().max()) if (~nan_want).any() else 0.0
    if not torch.equal(nan_got, nan_want) or not diff <= VERIFY_TOL:
        raise RuntimeError(f"wfkern.export: {what} must reproduce wfkern's outputs, got a max difference of {diff:.3g} "
                           f"(NaN rows {nan_got.tolist()} vs {nan_want.tolist()}); nothing was written")
    return diff


def _reference(source: ExportSource, x: Tensor, forget: Tensor) -> Tensor:
    with torch.no_grad():
        return ForgetInput(source.wf).eval()(x, forget)


# --- plain weights -----------------------------------------------------------------------------------------------

def export_weights(source: ExportSource, forget: ForgetSet, path: str, *, overwrite: bool = False) -> dict:
    """Write the model with ``forget`` baked in as a plain state dict (safetensors) with the original key names.

    The file loads into the architecture itself, e.g. ``torchvision.models.resnet18(num_classes=10)
    .load_state_dict(safetensors.torch.load_file(path))``, with no wfkern installed. Its metadata holds
    ``format`` (``wfkern.export/1``), ``arch``, ``forgotten`` (comma list) and ``wfkern_export`` (the JSON record:
    forgotten classes and names, base and gates fingerprints, architecture and sizes).

    Args:
        source: from :func:`wfkern.export.load_source`.
        forget: the class set (see :func:`wfkern.bake`).
        path: the .safetensors file (written atomically; its folder must exist).
        overwrite: replace an existing file (refused otherwise).
    Returns:
        The record written.
    """
    from safetensors.torch import save_file

    where = "wfkern.export_weights"
    path = _check_target(path, overwrite, where)
    classes = forget_set(forget, source.wf.num_classes, where)
    model = bake(source.wf, classes)
    record = source.record("weights", classes)
    if isinstance(model, ChannelAdapter):  # a 3-channel torchvision stem fed grey images: the stem's own keys
        record["channel_adapter"] = {"in_chans": model.in_chans, "model_chans": model.model_chans}
        model = model.model
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": EXPORT_FORMAT, "arch": source.config.model, "forgotten": ",".join(map(str, classes)),
            "wfkern_export": json.dumps(record, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    return record


# --- the traced model with a forget input ------------------------------------------------------------------------

def _dynamic_shapes(forget_input: str) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    forget = {0: batch, 1: torch.export.Dim("set_size", min=1, max=1 << 10)} if forget_input == "set" else {0: batch}
    return {"x": {0: batch}, "forget": forget}


def export_program(source: ExportSource, *, forget_input: str = "set", decompose: bool = False):
    """``torch.export`` of :class:`ForgetInput` (inputs ``x`` (B, C, S, S) and ``forget``; B and K dynamic).

    Args:
        decompose: trace the pure-PyTorch reference of the mask epilogue (standard aten ops only) instead of
            wfkern's op. Without it the graph keeps ``wfkern::mask_epilogue`` where ``torch.compile`` keeps it
            (attention qkv / MLP layers; convolutions always become tensor ops that inductor fuses).
    Returns:
        The ``torch.export.ExportedProgram``.
    """
    _check_forget_input(forget_input, "wfkern.export_program")
    module = ForgetInput(source.wf).eval()
    x, forget = example_inputs(source, 2, forget_input)
    with use_reference(decompose), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on its own internals
        program = torch.export.export(module, (x, forget), dynamic_shapes=_dynamic_shapes(forget_input))
    return _without_label_checks(program)


# Ops that check labels inside a traced graph and return them unchanged. ForgetInput has already replaced every
# label outside [-1, Nc) by -1, so in its graph they can never fire: they are removed, which keeps the ONNX graph
# standard and the pt2 package free of Python-defined ops.
_LABEL_CHECKS = ("wfkern.checked_labels.",)


def _without_label_checks(program):
    graph = program.graph_module.graph
    removed = False
    for node in list(graph.nodes):
        if node.op == "call_function" and str(node.target).startswith(_LABEL_CHECKS):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            removed = True
    if removed:
        graph.lint()
        program.graph_module.recompile()
    return program


def custom_ops(program) -> List[str]:
    """The non-aten ops (``wfkern::...``) an exported program calls, sorted."""
    return sorted({str(n.target).rsplit(".", 1)[0].replace(".", "::", 1) for n in program.graph.nodes
                   if n.op == "call_function" and str(n.target).startswith("wfkern.")})


def _atomic_with_suffix(path: str, suffix: str, write: Callable[[str], None]) -> None:
    """``atomic_write`` for writers that need the file name to end in ``suffix`` (AOTInductor's ``.pt2``)."""
    def inner(tmp: str) -> None:
        named = tmp + suffix
        write(named)
        os.replace(named, tmp)

    atomic_write(path, inner)


def export_onnx(source: ExportSource, path: str, *, overwrite: bool = False, forget_input: str = "set",
                verify: bool = True) -> dict:
    """Write the patched model as ONNX with a per-sample ``forget`` input (``torch.onnx.export(dynamo=True)``).

    Inputs ``input`` float32 (batch, C, S, S) and ``forget`` int64 (batch, set_size) (``forget_input="set"``) or
    (batch,) (``"single"``); output ``logits``. The epilogue is traced from wfkern's pure-PyTorch reference, so
    the graph holds standard ONNX ops only: a Gather of gate rows, Sigmoid, a product over the set, a multiply-add
    (rows of -1 select gates of exactly 1). A row with a label outside [-1, Nc) gives NaN logits (an explicit
    Where in the graph). The record is in the model's ``metadata_props["wfkern"]``.

    Args:
        verify: run the written file in onnxruntime (when installed) on a batch of every kind of row and refuse to
            keep it unless it matches wfkern's outputs within ``VERIFY_TOL``.
    Returns:
        The record, with ``verified_max_diff`` (None when onnxruntime is not installed).
    Raises:
        RuntimeError: onnx / onnxscript are missing (``pip install 'wfkern[export]'``), or the check failed.
    """
    where = "wfkern.export_onnx"
    path = _check_target(path, overwrite, where)
    _check_forget_input(forget_input, where)
    try:
        import onnx  # noqa: F401 - torch.onnx's dynamo exporter needs both
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"wfkern.export_onnx: needs onnx and onnxscript, got {e}; pip install 'wfkern[export]'") from None
    exported = export_program(source, forget_input=forget_input, decompose=True)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(exported, dynamo=True, input_names=["input", "forget"], output_names=["logits"],
                                    dynamic_shapes=_dynamic_shapes(forget_input), optimize=True, verbose=False)
    record = source.record("onnx")
    record["forget_input"] = forget_input
    program.model.metadata_props["wfkern"] = json.dumps(record, sort_keys=True)
    record["verified_max_diff"] = None

    def write(tmp: str) -> None:
        program.save(tmp, external_data=False)
        if verify:
            record["verified_max_diff"] = _verify_onnx(tmp, source, forget_input)

    atomic_write(path, write)
    return record


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The ONNX exporter's optimiser logs every pass at INFO and warns about its own internals: keep errors only."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _verify_onnx(path: str, source: ExportSource, forget_input: str) -> Optional[float]:
    try:
        import onnxruntime
    except ImportError:
        return None
    x, forget = _check_inputs(source, forget_input)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy(), "forget": forget.numpy()})[0])
    return _compare(got, _reference(source, x, forget), "the ONNX model")


def export_pt2(source: ExportSource, path: str, *, overwrite: bool = False, forget_input: str = "set",
               decompose: bool = False, verify: bool = True) -> dict:
    """Compile :func:`export_program` ahead of time with AOTInductor into a ``.pt2`` package (CPU).

    Load it with ``torch._inductor.aoti_load_package(path)`` and call ``runner(x, forget)``. Without
    ``decompose``, a graph that keeps ``wfkern::mask_epilogue`` (the record's ``custom_ops``) needs wfkern's
    compiled library loaded first: ``torch.ops.load_library(<wfkern/_C*.so>)`` (no wfkern Python code).
    The record is the package's ``aot_inductor.metadata["wfkern"]`` (``runner.get_metadata()``).

    Args:
        decompose: see :func:`export_program` (the package then needs nothing but torch).
        verify: load the written package and refuse to keep it unless it matches wfkern within ``VERIFY_TOL``.
    Returns:
        The record, with ``verified_max_diff``.
    """
    where = "wfkern.export_pt2"
    path = _check_target(path, overwrite, where)
    program = export_program(source, forget_input=forget_input, decompose=decompose)
    record = source.record("pt2")
    record.update(forget_input=forget_input, custom_ops=custom_ops(program))
    configs = {"aot_inductor.metadata": {"wfkern": json.dumps(record, sort_keys=True)}}
    record["verified_max_diff"] = None

    def write(tmp: str) -> None:
        torch._inductor.aoti_compile_and_package(program, package_path=tmp, inductor_configs=configs)
        if verify:
            x, forget = _check_inputs(source, forget_input)
            runner = torch._inductor.aoti_load_package(tmp)
            record["verified_max_diff"] = _compare(runner(x, forget), _reference(source, x, forget), "the pt2 package")

    _atomic_with_suffix(path, ".pt2", write)
    return record
