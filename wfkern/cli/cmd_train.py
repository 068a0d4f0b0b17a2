"""``wfkern train``: train the original classifier and save a checkpoint."""

from __future__ import annotations

import argparse
import sys

import torch

from wfkern.cli._common import (add_data_args, add_device_arg, add_loader_args, check_model_choice, check_output_file,
                                load_splits, parse_model_args, start_command, with_throughput)
from wfkern.cli.errors import UserError
from wfkern.models import DEFAULT_MODEL, create_model, list_models
from wfkern.train import ModelConfig, evaluate_accuracy, init_distributed, save_checkpoint, train_model
from wfkern.train.precision import use_channels_last
from wfkern.train.trainer import train_setting_problem

__all__ = ["add_parser", "run", "DEMO_TRAIN", "check_train_flags"]

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
                   help="architecture option (JSON value), e.g. widths=[32,64,64]; repeatable "
                        "(default: the architecture's own)")
    p.add_argument("--epochs", type=int, default=DEMO_TRAIN["epochs"], help="passes over the training split")
    p.add_argument("--batch-size", type=int, default=DEMO_TRAIN["batch_size"], help="global batch size")
    p.add_argument("--lr", type=float, default=DEMO_TRAIN["lr"], help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=DEMO_TRAIN["weight_decay"], help="AdamW weight decay")
    p.add_argument("--max-shift", type=int, default=DEMO_TRAIN["max_shift"], help="random-shift augmentation (px)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    p.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_arg(p)
    add_loader_args(p)
    p.set_defaults(run=with_throughput(run))


def check_train_flags(values: dict[str, object]) -> None:
    """``{"--epochs": 20, ...}``: each value by ``train_model``'s own rules; a one-line error before any work."""
    for flag, value in values.items():
        name = flag.lstrip("-").replace("-", "_")
        expectation = train_setting_problem("epochs" if name == "train_epochs" else name, value)
        if expectation is not None:
            raise UserError(f"{flag} must {expectation}, got {value}")


def run(args: argparse.Namespace) -> int:
    start_command(args)
    check_output_file(args.out, "--out")
    check_train_flags({"--epochs": args.epochs, "--batch-size": args.batch_size, "--lr": args.lr,
                       "--weight-decay": args.weight_decay, "--max-shift": args.max_shift})
    kwargs = parse_model_args(args.model_arg)
    check_model_choice(args.model, kwargs)
    ctx, device = init_distributed(args.device)
    split_seed = 0 if args.split_seed is None else args.split_seed
    train, val, test = load_splits(args.dataset, args.data_root, args.download, args.image_size, split_seed)
    info = train.info
    torch.manual_seed(args.seed)
    model = create_model(args.model, info.num_classes, info.in_chans, info.image_size, **kwargs)
    use_channels_last(model, args.precision, device)
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
