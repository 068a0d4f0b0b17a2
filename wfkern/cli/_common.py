"""Helpers shared by the subcommands: common arguments, data/model loading, per-class tables."""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch.utils.data import Dataset

from wfkern.cli.main import UserError
from wfkern.data import DEFAULT_DATASET, iter_batches, get_dataset, list_datasets
from wfkern.metrics import accuracy_split

__all__ = ["add_data_args", "add_device_arg", "load_splits", "parse_model_args", "resolve_device",
           "per_class_accuracy", "format_table", "ensure_dir", "ensure_parent"]


def add_data_args(p: argparse.ArgumentParser, dataset_default: str | None = DEFAULT_DATASET) -> None:
    """--dataset, --data-root, --download, --image-size, --split-seed."""
    p.add_argument("--dataset", default=dataset_default,
                   help=f"one of {', '.join(list_datasets())} (default: {dataset_default or 'from the checkpoint'})")
    p.add_argument("--data-root", default=None, help="dataset folder (not needed for the embedded digits)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing files (needs network)")
    p.add_argument("--image-size", type=int, default=None, help="resize images to this side (default: native)")
    p.add_argument("--split-seed", type=int, default=None, help="seed of the train/val/test split (default 0)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


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
                splits: tuple[str, ...] = ("train", "val", "test")) -> list[Dataset]:
    """The requested splits of one dataset (errors name the dataset and the missing files)."""
    return [get_dataset(name, root=root, split=s, seed=seed, download=download, image_size=image_size) for s in splits]


def checkpoint_and_splits(args: argparse.Namespace, device: torch.device, splits: tuple[str, ...]) -> tuple:
    """(model, config, [datasets]) for commands that start from ``--checkpoint`` and its dataset.

    ``--dataset``, ``--split-seed`` and ``--image-size`` default to what the checkpoint recorded.
    """
    from wfkern.train import load_checkpoint

    model, config = load_checkpoint(args.checkpoint, device=device)
    dataset = args.dataset or config.dataset
    if not dataset:
        raise UserError("--dataset must be given, got none (the checkpoint does not name its dataset)")
    seed = config.split_seed if args.split_seed is None else args.split_seed
    data = load_splits(dataset, args.data_root, args.download, args.image_size or config.image_size, seed, splits)
    return model, config, data


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


def ensure_dir(path: str, what: str) -> str:
    """Create ``path`` (and parents) or raise a one-line error."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} must be a writable directory, got {path!r} ({e.strerror})") from e
    return path


def ensure_parent(path: str, what: str) -> str:
    """Check that the folder of an output file exists."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"{what} must be in an existing directory, got {path!r} (no {parent})")
    return path
