"""``wfkern export``: the forgetting model out of Python: baked plain weights, ONNX or an AOTInductor package."""

from __future__ import annotations

import argparse
import os
import re
import sys

from wfkern.cli._common import add_gates_arg, apply_threads, check_output_file, parse_class_list
from wfkern.cli.errors import UserError

__all__ = ["add_parser", "run", "resolve_forget", "FORMATS"]

FORMATS = ("safetensors", "onnx", "pt2")
_SUFFIXES = {".onnx": "onnx", ".pt2": "pt2"}
_IDS = re.compile(r"\s*\d+\s*(-\s*\d+\s*)?")  # what parse_class_list reads: an id or a range of ids


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write the unlearned model for use outside wfkern: baked weights, ONNX or a pt2 package",
        description="Export a checkpoint with its gates (from `wfkern unlearn`). safetensors: the classes of "
                    "--forget folded into the weights, a plain state dict with the original architecture's key names "
                    "(torchvision / timm load it without wfkern). onnx / pt2: the patched model with a per-sample "
                    "int64 'forget' input (-1 = nothing; a row of K labels forgets the set) and a dynamic batch. "
                    "The file is written atomically and checked against wfkern's own outputs first. See "
                    "docs/export.md.")
    p.add_argument("--checkpoint", required=True, help="the original model (from `wfkern train` / `wfkern import`)")
    add_gates_arg(p, "its gates file (from `wfkern unlearn`)", required=True)
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="what to write (default: from the --out suffix: .onnx, .pt2, else safetensors)")
    p.add_argument("--forget", default=None, metavar="LIST",
                   help="safetensors only: the classes to fold in, ids or the checkpoint's class names (3,7 / cat,horse"
                        " / 0-4); their gates multiply (default: none, which only onnx / pt2 allow)")
    p.add_argument("--forget-input", choices=("set", "single"), default="set",
                   help="onnx / pt2: the forget input's shape, int64 (batch, K) sets or (batch,) single labels")
    p.add_argument("--decompose", action="store_true",
                   help="pt2: trace the mask epilogue as plain tensor ops (the package then needs only torch); "
                        "default: keep wfkern's fused op where torch.compile keeps it (needs wfkern's library)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists (refused otherwise)")
    p.add_argument("--no-verify", action="store_true",
                   help="onnx / pt2: skip running the written model against wfkern before keeping it")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, >= 1 (default: torch's choice)")
    p.set_defaults(run=run)


def _format(args: argparse.Namespace) -> str:
    if args.format is not None:
        return args.format
    return _SUFFIXES.get(os.path.splitext(args.out)[1].lower(), "safetensors")


def resolve_forget(text: str, num_classes: int, names: list[str] | None) -> list[int]:
    """``--forget`` text -> sorted distinct class ids: each comma item is a class name of the checkpoint (exactly,
    else ignoring case) or ids / ranges read by the project's class-list parser; one-line ``UserError`` otherwise."""
    ids, named = [], set()
    lowered = {} if names is None else {n.lower(): i for i, n in enumerate(names)}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if names is not None and item in names:
            named.add(names.index(item))
        elif item.lower() in lowered:
            named.add(lowered[item.lower()])
        elif _IDS.fullmatch(item):
            ids.append(item)
        elif names is None:
            raise UserError(f"--forget must be class ids (the checkpoint names no classes), got {item!r}")
        else:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise UserError(f"--forget must be class ids or the checkpoint's class names ({shown}), got {item!r}")
    listed = parse_class_list(",".join(ids), num_classes, option="--forget") if ids else []
    if not listed and not named:
        raise UserError(f"--forget must name at least one class, got {text!r}")
    return sorted(set(listed) | named)


def _check_args(args: argparse.Namespace, fmt: str) -> None:
    if fmt == "safetensors" and args.forget is None:
        raise UserError("--forget must be given with --format safetensors (the classes to fold into the weights), got "
                        "none; onnx and pt2 take the classes as an input instead")
    if fmt != "safetensors" and args.forget is not None:
        raise UserError(f"--forget must be left out with --format {fmt} (the model takes 'forget' as an input), got "
                        f"{args.forget!r}")
    if args.decompose and fmt != "pt2":
        raise UserError(f"--decompose must go with --format pt2, got --format {fmt}")
    for what, path in (("--checkpoint", args.checkpoint), ("--gates", args.gates)):
        if not os.path.isfile(path):
            raise UserError(f"{what} must be an existing file, got {path!r}")
    check_output_file(args.out, "--out")
    if os.path.lexists(args.out) and not args.overwrite:
        raise UserError(f"--out must not exist yet, got {args.out!r}, which does; pass --overwrite to replace it")
    apply_threads(args)


def _mib(path: str) -> str:
    return f"{os.path.getsize(path) / 2**20:.1f} MiB"


def run(args: argparse.Namespace) -> int:
    from wfkern.export import export_onnx, export_pt2, export_weights, load_source
    from wfkern.train.checkpoint import read_checkpoint_config
    from wfkern.export.source import class_names

    fmt = _format(args)
    _check_args(args, fmt)
    config = read_checkpoint_config(args.checkpoint)  # names and class count, before any weights are read
    names = class_names(config)
    classes = resolve_forget(args.forget, config.num_classes, names) if fmt == "safetensors" else None
    source = load_source(args.checkpoint, args.gates)
    if fmt == "safetensors":
        record = export_weights(source, classes, args.out, overwrite=args.overwrite)
        shown = ", ".join(str(c) if str(n) == str(c) else f"{c} ({n})"
                          for c, n in zip(classes, record.get("forgotten_names", classes)))
        print(f"wrote {args.out} ({_mib(args.out)}): {config.model} with class{'es' if len(classes) > 1 else ''} "
              f"{shown} folded into the weights; a plain state dict of the original architecture")
        return 0
    print(f"exporting {config.model} as {fmt} (tracing{', compiling' if fmt == 'pt2' else ''}; this takes a while) ...",
          file=sys.stderr, flush=True)
    verify = not args.no_verify
    if fmt == "onnx":
        record = export_onnx(source, args.out, overwrite=args.overwrite, forget_input=args.forget_input, verify=verify)
        checked = ("not checked (onnxruntime is not installed)" if verify and record["verified_max_diff"] is None
                   else "not checked" if not verify else
                   f"matches wfkern within {record['verified_max_diff']:.1g} in onnxruntime")
    else:
        record = export_pt2(source, args.out, overwrite=args.overwrite, forget_input=args.forget_input,
                         decompose=args.decompose, verify=verify)
        checked = (f"matches wfkern within {record['verified_max_diff']:.1g}" if verify else "not checked")
        if record["custom_ops"]:
            checked += f"; calls {', '.join(record['custom_ops'])}: load wfkern's library first (docs/export.md)"
    shape = "(batch, K)" if args.forget_input == "set" else "(batch,)"
    first = "input" if fmt == "onnx" else "x"
    print(f"wrote {args.out} ({_mib(args.out)}, {fmt}): inputs {first} (batch, {config.in_chans}, {config.image_size}, "
          f"{config.image_size}) float32 and forget {shape} int64 (-1 = nothing); {checked}")
    return 0
