"""Helpers shared by the subcommands: data, device and loader arguments, model loading, per-class tables.

Settings flags, class lists and output paths live in settings_flags.py, class_lists.py and paths.py (also importable
from here, as before)."""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch.utils.data import Dataset

from wfkern.cli.class_lists import add_class_args, class_list_items, parse_class_list, resolve_classes  # noqa: F401
from wfkern.cli.errors import UserError
from wfkern.cli.paths import check_output_dir, check_output_file, ensure_dir, ensure_parent  # noqa: F401
from wfkern.cli.settings_flags import NONE_WORDS, add_settings_flags, settings_given  # noqa: F401
from wfkern.data import DEFAULT_DATASET, iter_batches, get_dataset, list_datasets
from wfkern.metrics import accuracy_split
from wfkern.train.precision import PRECISIONS

__all__ = ["add_data_args", "add_device_arg", "load_splits", "parse_model_args", "resolve_device",
           "per_class_accuracy", "format_table", "ensure_dir", "ensure_parent", "check_output_file",
           "check_output_dir", "apply_threads", "check_model_choice", "add_loader_args", "with_throughput",
           "add_class_args", "class_list_items", "data_settings", "parse_class_list", "resolve_classes",
           "add_settings_flags", "settings_given", "add_gates_arg",
           "NONE_WORDS"]


def add_data_args(p: argparse.ArgumentParser, dataset_default: str | None = DEFAULT_DATASET) -> None:
    """--dataset, --data-root, --download, --image-size, --split-seed."""
    p.add_argument("--dataset", default=dataset_default,
                   help=f"one of {', '.join(list_datasets())} (default: {dataset_default or 'from the checkpoint'})")
    p.add_argument("--data-root", default=None,
                   help="dataset folder (default: none, which only the embedded digits need)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing files (needs network)")
    # Commands that start from --checkpoint (no dataset default) take the checkpoint's size and split.
    image_default, seed_default = ("the checkpoint's", "the checkpoint's") if dataset_default is None else ("native", "0")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"resize images to this side (default: {image_default})")
    p.add_argument("--split-seed", type=int, default=None,
                   help=f"seed of the train/val/test split (default: {seed_default})")


class _GatesPath(argparse.Action):
    """Stores the gates file path; the old spelling --filters still works, with a note on stderr."""

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string == "--filters":
            print(f"{parser.prog}: --filters is deprecated and will be removed in the next release; use --gates",
                  file=sys.stderr)
        setattr(namespace, self.dest, value)


def add_gates_arg(p, help: str, **kwargs) -> None:
    """--gates PATH (a gates file from `wfkern unlearn`); --filters, its old name, still works for one release."""
    p.add_argument("--gates", "--filters", dest="gates", action=_GatesPath, metavar="PATH",
                   help=f"{help}; --filters: its old name, deprecated", **kwargs)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, >= 1 (default: torch's choice)")


def add_loader_args(p: argparse.ArgumentParser) -> None:
    """--num-workers and --precision: how batches are read and computed (wire ``run`` with ``with_throughput``)."""
    group = p.add_argument_group("throughput")
    group.add_argument("--num-workers", type=int, default=0, metavar="N",
                       help="worker processes decoding the images of lazily loaded datasets (imagefolder), kept for "
                            "the whole command; the batches are the same for every N (samples, order, values); the "
                            "in-memory datasets (digits, MNIST, CIFAR-10) need none. Batches are pinned when the "
                            "device is CUDA")
    group.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="bf16: bfloat16 autocast on the GPU or the CPU (and channels-last CNN weights on CUDA); "
                            "weights, gates and optimiser state stay float32")


def _device_type(name: str | None) -> str:
    """The device type a command will run on ("cuda" / "cpu"); an invalid name is the command's own error."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name).type
    except RuntimeError:
        return "cpu"


def with_throughput(run):
    """Wrap a command's ``run``: check --num-workers / --precision, then run it inside ``wfkern.loader_options``
    (workers, pinned memory on CUDA) and ``wfkern.precision``; worker processes end with the command."""
    import functools

    from wfkern.data.loader import loader_option_problem, loader_options
    from wfkern.train.precision import check_precision, precision

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        workers = getattr(args, "num_workers", 0)
        problem = loader_option_problem("num_workers", workers)
        if problem is not None:
            raise UserError(f"--num-workers must {problem[1]}, got {workers}; 0 reads in the command's own process")
        mode = getattr(args, "precision", "fp32")
        device_type = _device_type(getattr(args, "device", None))
        try:
            check_precision(mode, device_type)
        except ValueError as e:
            raise UserError("--" + str(e).split(": ", 1)[1]) from None
        with loader_options(workers, pin_memory=device_type == "cuda"), precision(mode, device_type):
            return run(args)

    return wrapped


def resolve_device(name: str | None) -> torch.device:
    """The device a command runs on; a clear error for an unavailable one."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device must be cpu, cuda or cuda:N, got {name!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device must be available, got {name!r} on a machine without CUDA; use --device cpu")
    return dev


def load_splits(name: str, root: str | None, download: bool, image_size: int | None, seed: int,
                splits: tuple[str, ...] = ("train", "val", "test"), preprocess: dict | None = None) -> list[Dataset]:
    """The requested splits of one dataset (errors name the dataset and the missing files); ``preprocess``: the
    model's normalisation / crop (a checkpoint's), else the dataset's own."""
    return [get_dataset(name, root=root, split=s, seed=seed, download=download, image_size=image_size,
                        preprocess=preprocess) for s in splits]


def checkpoint_and_splits(args: argparse.Namespace, device: torch.device, splits: tuple[str, ...]) -> tuple:
    """(model, config, [datasets]) for commands that start from ``--checkpoint`` and its dataset.

    ``--dataset``, ``--split-seed`` and ``--image-size`` default to what the checkpoint recorded; the data
    gets the checkpoint's preprocessing (an imported model's normalisation); with ``--precision bf16`` on CUDA
    a CNN's weights go channels-last.
    """
    from wfkern.train import load_checkpoint
    from wfkern.train.precision import use_channels_last

    model, config = load_checkpoint(args.checkpoint, device=device)
    use_channels_last(model, getattr(args, "precision", "fp32"), device)
    data = data_settings(args, config)
    splits = load_splits(data["dataset"], args.data_root, args.download, data["image_size"], data["split_seed"], splits,
                         preprocess=config.preprocess or None)
    return model, config, splits


def data_settings(args: argparse.Namespace, config) -> dict:
    """The data a command that starts from ``--checkpoint`` reads, as resolved: ``dataset``, ``split_seed`` and
    ``image_size`` (the flags, else the checkpoint's) and ``data_root`` (absolute; None for none)."""
    dataset = args.dataset or config.dataset
    if not dataset:
        raise UserError("--dataset must be given, got none (the checkpoint does not name its dataset)")
    return {"dataset": dataset, "split_seed": config.split_seed if args.split_seed is None else args.split_seed,
            "image_size": args.image_size or config.image_size,
            "data_root": os.path.abspath(args.data_root) if args.data_root else None}


def parse_model_args(items: list[str] | None) -> dict:
    """``["widths=[32,64]", "hidden=64"]`` -> ``{"widths": [32, 64], "hidden": 64}`` (JSON values, else strings)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--model-arg must be KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def check_model_choice(name: str, kwargs: dict) -> None:
    """``--model`` / ``--model-arg`` by the model registry's declarations; a one-line error before any work."""
    from wfkern.models.registry import ModelArgError, check_model_args, model_params

    try:
        check_model_args(name, kwargs=kwargs)
    except ModelArgError as e:
        if e.key == "name":
            raise UserError(f"--model name must {e.expectation}, got {e.got!r}") from None
        if e.unknown:
            options = ", ".join(sorted(model_params(name))) or "none"
            raise UserError(f"--model-arg must be options of {name!r} ({options}), got {e.key!r}") from None
        raise UserError(f"--model-arg {e.key} must {e.expectation}, got {json.dumps(e.got, default=str)}") from None


@torch.no_grad()
def per_class_accuracy(model, data: Dataset, num_classes: int, device: torch.device,
                       wf_forget: bool = True, batch_size: int = 512) -> list[tuple[float, float]]:
    """(Acc_f, Acc_r) per class c, with every test sample forgetting c (``wf_forget``) or the plain model.

    Args:
        model: a WF model (called as ``model(x, forget=c)``), or any classifier when ``wf_forget`` is False.
        data: the test split.  num_classes: Nc.  device: where to run.
    Returns:
        One (acc_f, acc_r) pair per class, in [0, 1].
    """
    xs, ys = [], []
    for x, y in iter_batches(data, torch.arange(len(data)).split(batch_size)):
        xs.append(x)
        ys.append(y)
    labels = torch.cat(ys)
    rows = []
    for c in range(num_classes):
        preds = [(model(x.to(device), forget=c) if wf_forget else model(x.to(device))).argmax(1).cpu() for x in xs]
        rows.append(accuracy_split(torch.cat(preds), labels, c))
    return rows


def format_table(header: list[str], rows: list[list], floatfmt: str = "{:.2f}") -> str:
    """Plain fixed-width text table (floats formatted with ``floatfmt``)."""
    cells = [[floatfmt.format(v) if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


def start_command(args: argparse.Namespace) -> torch.device:
    """The opening of every command that trains or starts from a checkpoint, before its own checks and work:
    ``--checkpoint`` (when the command takes one) names an existing file, ``--threads`` is applied, and
    ``--device`` is checked.

    Returns:
        the device (a command run under torchrun takes its own from ``init_distributed`` after this).
    """
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise UserError(f"--checkpoint must be an existing file, got {checkpoint!r}")
    apply_threads(args)
    return resolve_device(args.device)


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads``: a positive count, set for torch (before any work)."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}; leave it out for torch's choice")
    torch.set_num_threads(threads)
