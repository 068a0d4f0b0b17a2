"""``wfkern train``: train the original classifier and save a checkpoint."""

from __future__ import annotations

import argparse
import sys

import torch

from wfkern.cli._common import (add_data_args, add_device_arg, ensure_parent, load_splits, parse_model_args,
                                resolve_device)
from wfkern.models import DEFAULT_MODEL, create_model, list_models
from wfkern.train import ModelConfig, evaluate_accuracy, init_distributed, save_checkpoint, train_model

__all__ = ["add_parser", "run", "DEMO_TRAIN"]

# Defaults used by `wfkern train` and `wfkern demo` for the small CNN on the digits.
DEMO_TRAIN = {"epochs": 20, "batch_size": 128, "lr": 3e-3, "weight_decay": 5e-4, "max_shift": 1}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an original classifier and save it",
                       description="Train an original (to-be-unlearned) classifier; saves safetensors + metadata. "
                                   "Runs under torchrun for several processes.")
    add_data_args(p)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"one of {', '.join(list_models())}, or timm:<name> / torchvision:<name>")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="architecture option (JSON value), e.g. widths=[32,64,64]; repeatable")
    p.add_argument("--epochs", type=int, default=DEMO_TRAIN["epochs"])
    p.add_argument("--batch-size", type=int, default=DEMO_TRAIN["batch_size"])
    p.add_argument("--lr", type=float, default=DEMO_TRAIN["lr"])
    p.add_argument("--weight-decay", type=float, default=DEMO_TRAIN["weight_decay"])
    p.add_argument("--max-shift", type=int, default=DEMO_TRAIN["max_shift"], help="random-shift augmentation (px)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    p.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    ensure_parent(args.out, "--out")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device is not None:
        resolve_device(args.device)
    ctx, device = init_distributed(args.device)
    split_seed = 0 if args.split_seed is None else args.split_seed
    train, val, test = load_splits(args.dataset, args.data_root, args.download, args.image_size, split_seed)
    info = train.info
    kwargs = parse_model_args(args.model_arg)
    torch.manual_seed(args.seed)
    try:
        model = create_model(args.model, info.num_classes, info.in_chans, info.image_size, **kwargs)
    except TypeError as e:
        raise ValueError(f"wfkern.create_model: --model-arg must be options of {args.model!r}, got {kwargs} ({e})") from e
    result = train_model(model, train, val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, max_shift=args.max_shift, seed=args.seed, device=device,
                         progress=not args.no_progress, ctx=ctx)
    test_acc = evaluate_accuracy(model, test, device=device)
    if ctx.rank == 0:
        config = ModelConfig(args.model, info.num_classes, info.in_chans, info.image_size, kwargs, info.name,
                             split_seed, {"val_acc": result.val_acc, "test_acc": test_acc, "epochs": args.epochs,
                                          "seconds": round(result.seconds, 1)})
        save_checkpoint(args.out, model, config)
        print(f"trained {args.model} on {info.name}: val acc {100 * result.val_acc:.2f}%, "
              f"test acc {100 * test_acc:.2f}% in {result.seconds:.1f}s -> {args.out}", file=sys.stdout)
    return 0
