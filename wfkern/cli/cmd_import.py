"""``wfkern import``: your own timm / torchvision weights as a wfkern checkpoint (``unlearn`` / ``evaluate`` /
``baseline`` then take it as ``--checkpoint``)."""

from __future__ import annotations

import argparse
import os
import sys

from wfkern.cli._common import check_model_choice, check_output_file, parse_model_args
from wfkern.cli.errors import UserError
from wfkern.data import dataset_shape
from wfkern.data.preprocess import INTERPOLATIONS, as_preprocess
from wfkern.models import list_models
from wfkern.models.importing import DEFAULT_WEIGHTS, ImportWeightsError, import_model
from wfkern.models.registry import MAX_CHANNELS, MAX_CLASSES, MAX_IMAGE_SIZE
from wfkern.train import ModelConfig, save_checkpoint

__all__ = ["add_parser", "run", "parse_floats"]

# Library keys of ImportWeightsError -> the flag that sets them.
_FLAGS = {"weights": "--weights", "num_classes": "--num-classes", "model": "--model"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="turn timm / torchvision weights (a state dict or safetensors file) into a wfkern checkpoint",
        description="Build --model with wfkern's model registry, load --weights into it (safetensors, or a torch "
                    "state dict read with weights_only=True; 'module.', '_orig_mod.' and 'model.' prefixes "
                    "stripped) and write a wfkern checkpoint that `wfkern unlearn`, `evaluate` and `baseline` take "
                    "as --checkpoint. It records the dataset, input size, channels and normalisation the model "
                    "expects. See docs/models.md.")
    p.add_argument("--model", required=True,
                   help=f"torchvision:<name> (e.g. torchvision:resnet18), timm:<name> (e.g. "
                        f"timm:vit_tiny_patch16_224) or one of {', '.join(list_models())}")
    p.add_argument("--num-classes", type=int, required=True, help="classes of the model (its head's outputs)")
    p.add_argument("--weights", required=True, metavar="FILE|default",
                   help="a .safetensors file or a torch state dict (.pt / .pth, or a checkpoint dict holding one "
                        "under 'state_dict' / 'model'), or 'default': the library's pretrained weights "
                        "(torchvision weights='DEFAULT', timm pretrained=True; needs the network or their cache)")
    p.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="architecture option (JSON value), e.g. patch_size=16; repeatable (default: the "
                        "architecture's own; a timm ViT's patch size is read from the weights)")
    p.add_argument("--new-head", action="store_true",
                   help="drop the weights' classifier head and start a new one for --num-classes: it is untrained, "
                        "fine-tune the model before unlearning (with --weights default this happens whenever the "
                        "pretrained head has another size)")
    p.add_argument("--seed", type=int, default=0, help="seed of a new head's initialisation")
    group = p.add_argument_group("what the model expects (recorded in the checkpoint; later commands use it)")
    group.add_argument("--dataset", default=None,
                       help="dataset the model is for, e.g. imagefolder or cifar10 (default: none; later commands "
                            "then need --dataset)")
    group.add_argument("--image-size", type=int, default=None,
                       help="input side in pixels (default: the dataset's native side; 224 for imagefolder or none)")
    group.add_argument("--in-chans", type=int, default=None, help="input channels (default: the dataset's, else 3)")
    group.add_argument("--split-seed", type=int, default=0, help="seed of the dataset's train/val/test split")
    group.add_argument("--mean", default=None, metavar="M1,M2,M3",
                       help="normalisation mean, one value per channel (default: the library's for --weights default, "
                            "else the dataset's own)")
    group.add_argument("--std", default=None, metavar="S1,S2,S3",
                       help="normalisation standard deviation, one per channel (default: as --mean)")
    group.add_argument("--crop-pct", type=float, default=None,
                       help="ImageFolder images are resized to image-size / crop-pct, then centre-cropped, e.g. 0.875 "
                            "(default: the library's for --weights default, else 1: no margin)")
    group.add_argument("--interpolation", choices=INTERPOLATIONS, default=None,
                       help="resize filter of ImageFolder images (default: the library's for --weights default, "
                            "else bilinear)")
    p.set_defaults(run=run)


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    """``"0.5,0.5,0.5"`` -> ``[0.5, 0.5, 0.5]``; a one-line error for anything else."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated numbers, one per channel, got {text!r}") from None


def _sizes(args) -> tuple[str, int, int]:
    """(dataset name, in_chans, image_size) with the dataset's defaults; one-line errors for what cannot fit."""
    shape = None
    if args.dataset:
        try:
            shape = dataset_shape(args.dataset)
        except ValueError as e:
            raise UserError(f"--dataset must {str(e).split(' must ', 1)[1]}") from None
    classes, chans, side = shape if shape is not None else (None, 3, 224)
    in_chans = chans if args.in_chans is None else args.in_chans
    image_size = side if args.image_size is None else args.image_size
    for flag, value, hi in (("--num-classes", args.num_classes, MAX_CLASSES), ("--in-chans", in_chans, MAX_CHANNELS),
                            ("--image-size", image_size, MAX_IMAGE_SIZE)):
        if not 1 <= value <= hi:
            raise UserError(f"{flag} must be >= 1 and <= {hi}, got {value}")
    if shape is not None and classes is not None and args.num_classes != classes:
        raise UserError(f"--num-classes must be the class count of --dataset {args.dataset} ({classes}), got "
                        f"{args.num_classes}")
    if shape is not None and args.in_chans is not None and args.in_chans != chans:
        raise UserError(f"--in-chans must be the channels of --dataset {args.dataset} ({chans}), got {args.in_chans}")
    return args.dataset or "", in_chans, image_size


def _preprocess(args, in_chans: int) -> dict:
    given = {"mean": parse_floats(args.mean, "--mean"), "std": parse_floats(args.std, "--std"),
             "crop_pct": args.crop_pct, "interpolation": args.interpolation}
    try:
        as_preprocess({k: v for k, v in given.items() if v is not None}, in_chans)
    except ValueError as e:
        key, rest = str(e).split("preprocess.", 1)[1].split(" must ", 1)
        raise UserError(f"--{key.replace('_', '-')} must {rest}") from None
    return {k: v for k, v in given.items() if v is not None}


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def run(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    if args.weights != DEFAULT_WEIGHTS and not os.path.isfile(args.weights):
        raise UserError(f"--weights must be an existing file or 'default', got {args.weights!r}")
    kwargs = parse_model_args(args.model_arg)
    check_model_choice(args.model, kwargs)
    dataset, in_chans, image_size = _sizes(args)
    given = _preprocess(args, in_chans)
    if args.weights == DEFAULT_WEIGHTS:
        print(f"fetching the library's pretrained weights for {args.model} (needs the network or the library's "
              "cache)...", file=sys.stderr)
    try:
        model, info = import_model(args.model, args.weights, num_classes=args.num_classes, in_chans=in_chans,
                                   image_size=image_size, new_head=args.new_head, seed=args.seed, **kwargs)
    except ImportWeightsError as e:
        raise UserError(f"{_FLAGS.get(e.key, e.key)} must {e.expectation}, got {e.got}"
                        + (f"; {e.fix}" if e.fix else "")) from None
    # Normalisation: what the user said, else the library's for its own weights, else the dataset's own.
    library = info.library_preprocess if args.weights == DEFAULT_WEIGHTS else {}
    if library and len(library.get("mean", [])) != in_chans:
        library = {k: v for k, v in library.items() if k not in ("mean", "std")}
    preprocess = {**library, **given}
    extra = {"imported": info.source}
    if info.head_reset:
        extra["head_untrained"] = True
    config = ModelConfig(args.model, args.num_classes, in_chans, image_size, info.model_kwargs, dataset,
                         args.split_seed, extra, preprocess)
    save_checkpoint(args.out, model, config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"imported {args.model} ({n_params / 1e6:.2f}M parameters) for {args.num_classes} classes, "
          f"{in_chans}x{image_size}x{image_size} input, dataset {dataset or '(none: pass --dataset later)'} "
          f"-> {args.out}")
    stripped = f", prefix {info.stripped!r} stripped" if info.stripped else ""
    print(f"  weights: {info.source}, {info.tensors} tensors ({'/'.join(info.dtypes)}){stripped}"
          + (f"; options {info.model_kwargs}" if info.model_kwargs else ""))
    if preprocess:
        said = "from the library's pretrained weights" if library and not given else "as given"
        parts = [f"{k} {_fmt(v) if isinstance(v, list) else v}" for k, v in preprocess.items()]
        print(f"  preprocessing ({said}): {', '.join(parts)}")
    else:
        print("  preprocessing: the dataset's own normalisation")
        hint = info.library_preprocess
        if hint.get("mean") and len(hint["mean"]) == in_chans:
            print(f"  note: {args.model.split(':')[0]}'s own pretrained weights expect mean {_fmt(hint['mean'])}, "
                  f"std {_fmt(hint['std'])}; if these weights were trained that way, pass --mean / --std")
    if info.head is None:
        print(f"  head: no {args.num_classes}-output classifier layer found; all weights loaded")
    elif info.head_reset:
        was = f" (the weights' has {info.file_classes} outputs)" if info.file_classes is not None else ""
        print(f"  head: {info.head} is NEW and UNTRAINED for {args.num_classes} classes{was}: fine-tune the model "
              "before unlearning (docs/models.md)", file=sys.stdout)
    else:
        print(f"  head: {info.head} loaded ({args.num_classes} classes)")
    return 0
