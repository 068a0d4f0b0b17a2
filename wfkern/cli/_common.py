"""Helpers shared by the subcommands: common arguments, data/model loading, per-class tables."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import tempfile
import typing

import torch
from torch.utils.data import Dataset

from wfkern.cli.errors import UserError
from wfkern.data import DEFAULT_DATASET, iter_batches, get_dataset, list_datasets
from wfkern.metrics import accuracy_split
from wfkern.train.precision import PRECISIONS

__all__ = ["add_data_args", "add_device_arg", "load_splits", "parse_model_args", "resolve_device",
           "per_class_accuracy", "format_table", "ensure_dir", "ensure_parent", "check_output_file",
           "check_output_dir", "apply_threads", "check_model_choice", "add_loader_args", "with_throughput",
           "add_class_args", "class_list_items", "data_settings", "parse_class_list", "resolve_classes",
           "add_settings_flags", "settings_given",
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


# --- flags made from a settings dataclass (UnlearnConfig, EvalSettings): each default is written there, once ----

# Words that set a setting to None on the command line where None is a choice (``--clip-norm none``: no clipping).
NONE_WORDS = ("none", "off")


def _flag_fields(cls) -> list:
    """The fields of ``cls`` that are flags: all but those marked ``metadata={"flag": False}``."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", True)]


def _none_or(number: type):
    """The text of a flag whose setting may be None: 'none' / 'off' -> None, else ``number`` (text that is no number
    stays text, for the setting's own check to refuse with its rule)."""
    def convert(text):
        if not isinstance(text, str):  # already converted by argparse (``_number_or_none_word``)
            return text
        if text.strip().lower() in NONE_WORDS:
            return None
        try:
            return number(text)
        except ValueError:
            return text
    return convert


def _number_or_none_word(number: type):
    """argparse's converter for a setting whose default is None: a number, or a none word kept as text (for
    ``settings_given`` to turn into None: argparse's None means "not given")."""
    as_number = _none_or(number)
    return lambda text: text if text.strip().lower() in NONE_WORDS else as_number(text)


def _flag_type(cls, f: dataclasses.Field, hints: dict) -> tuple:
    """(what argparse converts the flag's text with, what ``settings_given`` converts the parsed value with or None).

    From the field's type. ``metadata["parse"]`` (a comma list, ...) runs in ``settings_given``, so the parsed
    flags keep the text as typed; so does an Optional number whose default is not None (None is a choice, e.g.
    no clipping): 'none' or 'off' sets it. An Optional number whose default is None (λ1 resolved per model, no
    clipping) parses as a number, and 'none' / 'off' give the default explicitly (after a --recipe that sets one).
    """
    hint = hints[f.name]
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    if "parse" in f.metadata:
        return str, f.metadata["parse"]
    if len(kinds) != 1 or kinds[0] not in (int, float, str):
        raise TypeError(f"wfkern.cli: {cls.__name__}.{f.name} must be an int, float or str setting (or give "
                        f"metadata 'parse'), got {hint}")
    if type(None) in typing.get_args(hint):
        if f.default is None:
            return _number_or_none_word(kinds[0]), _none_or(kinds[0])
        return str, _none_or(kinds[0])
    return kinds[0], None


def _shown(f: dataclasses.Field, value) -> str:
    """A setting's value as --help says it: None in the field's own words (``metadata["none"]``)."""
    return f.metadata.get("none", "none") if value is None else str(value)


def add_settings_flags(group, cls, also: tuple[str, dict] | None = None) -> None:
    """One flag per field of the settings dataclass ``cls`` (``clip_norm`` -> ``--clip-norm``).

    Type, choices, metavar and help come from the field (``metadata``: ``help``, ``choices``, ``metavar``,
    ``none`` for what None means, ``parse``), "(default: X)" from its default; ``also`` = (where, values):
    another set of defaults, shown beside it where it differs, e.g. ("--recipe paper", PAPER_RECIPE).
    argparse's own default is None, "not given": ``settings_given`` reads the flags given, the dataclass
    keeps the rest.
    """
    hints = typing.get_type_hints(cls)
    for f in _flag_fields(cls):
        convert = _flag_type(cls, f, hints)[0]
        none_word = type(None) in typing.get_args(hints[f.name])  # 'none' is a choice
        text = f.metadata["help"] + (f"; 'none': {f.metadata['none']}" if none_word else "")
        default = f"default: {_shown(f, f.default)}"
        if also is not None and f.name in also[1] and also[1][f.name] != f.default:
            default += f"; {also[0]}: {_shown(f, also[1][f.name])}"
        group.add_argument("--" + f.name.replace("_", "-"), type=convert, choices=f.metadata.get("choices"),
                           default=None, metavar=f.metadata.get("metavar"),
                           help=f"{text} ({default})".replace("%", "%%"))


def settings_given(args: argparse.Namespace, cls) -> dict:
    """The settings of ``cls`` whose flags were given: {field name: value}, the text converted where the flag
    keeps it (``metadata["parse"]``; 'none' or 'off' for None where None is a choice)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in _flag_fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            convert = _flag_type(cls, f, hints)[1]
            out[f.name] = convert(value) if convert is not None else value
    return out


# --- which classes a command covers: --classes (exactly these) vs --sample-classes (N at random) ---------------

def add_class_args(p: argparse.ArgumentParser, all_means: str = "all classes") -> None:
    """--classes (exactly the classes named), --sample-classes N (a seeded random subset), --sample-seed.

    ``--classes 3`` is class 3, never "3 random classes": a count is always ``--sample-classes``.
    ``--classes-seed`` is kept as an alias of ``--sample-seed``.
    """
    p.add_argument("--classes", default=None, metavar="LIST",
                   help="exactly these classes: one index (3 = class 3), a list (0,3,5) or ranges (0-4,7), each in "
                        f"[0, the model's class count) (default: {all_means}); for N random classes use "
                        "--sample-classes N")
    p.add_argument("--sample-classes", type=int, default=None, metavar="N",
                   help="a seeded random subset of N classes, drawn from --classes when given (default: no sampling)")
    p.add_argument("--sample-seed", "--classes-seed", dest="sample_seed", type=int, default=0, metavar="SEED",
                   help="seed of --sample-classes (same seed, same classes)")


# One item of a class list: an index or a range low-high (ASCII digits; spaces around the dash allowed).
_CLASS_ITEM = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?")
_NEGATIVE_ITEM = re.compile(r"-\s*[0-9]+(?:\s*-\s*-?\s*[0-9]+)?|[0-9]+\s*-\s*-\s*[0-9]+")
# An index with more digits than this is larger than any model's class count: it is compared, never converted.
_MAX_CLASS_DIGITS = 30


def _class_number(digits: str) -> float:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_CLASS_DIGITS else math.inf


def class_list_items(text: str, option: str = "--classes") -> list[tuple[float, float, str]]:
    """The items of a class list as (low, high, the item as typed), checked for form, never expanded.

    ``"0-4,7"`` -> [(0, 4, "0-4"), (7, 7, "7")]. Raises a one-line ``UserError`` for anything that is not a
    list of indices >= 0 and ranges low-high (names, negative numbers, reversed ranges, nothing at all).
    """
    hint = "; for N random classes use --sample-classes N" if option == "--classes" else ""
    items = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        match = _CLASS_ITEM.fullmatch(item)
        if match is None:
            if _NEGATIVE_ITEM.fullmatch(item):
                raise UserError(f"{option} must be class indices >= 0 and ranges low-high, got {item!r} in {text!r}")
            raise UserError(f"{option} must be class indices like 3, 0,3,5 or 0-4, got {text!r}{hint}")
        low = _class_number(match.group(1))
        high = _class_number(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise UserError(f"{option} must be class indices >= 0 and ranges low-high, got {item!r} in {text!r}")
        items.append((low, high, item))
    if not items:
        raise UserError(f"{option} must name at least one class, got {text!r}{hint}")
    return items


def parse_class_list(text: str | None, num_classes: int, option: str = "--classes") -> list[int] | None:
    """The classes of a class list, each checked against the model's class count before any range is expanded.

    ``None`` -> None (all); ``"3"`` -> [3]; ``"0,3,5"`` -> [0, 3, 5]; ``"0-4,7"`` -> [0, 1, 2, 3, 4, 7].
    Sorted and distinct (``"3,1-3"`` is [1, 2, 3]); empty items are skipped (``"3,"`` is class 3). The form alone
    (before the model is known) is ``class_list_items``.

    Args:
        text: the option's text.  num_classes: the model's class count; every index must be below it.
        option: the option's name for messages.
    Raises:
        UserError: one line, naming the items outside ``[0, num_classes)`` as typed (``0-99999999999``).
    """
    if text is None:
        return None
    items = class_list_items(text, option)
    outside = [item for _, high, item in items if high >= num_classes]
    if outside:
        raise UserError(f"{option} must be class indices in [0, {num_classes}) (the model has {num_classes} "
                        f"classes), got {', '.join(outside)}")
    return sorted({c for low, high, _ in items for c in range(int(low), int(high) + 1)})


def resolve_classes(args: argparse.Namespace, num_classes: int, pool: list[int] | None = None,
                    pool_what: str = "", pool_fix: str = "") -> list[int]:
    """The classes a command covers, from ``--classes`` / ``--sample-classes`` / ``--sample-seed``.

    Args:
        args: parsed flags (``add_class_args``).
        num_classes: the model's class count; every listed class is checked against it.
        pool: the classes available when not all are (e.g. those a baseline ran): the default instead of
            all classes, and what ``--classes`` must stay within.
        pool_what: how to name ``pool`` in an error ("the classes the baseline in 'bl/' ran").
        pool_fix: what to do about it, appended to that error.
    Returns:
        Sorted class indices.
    """
    from wfkern.metrics.classes import format_classes, select_classes

    listed = parse_class_list(getattr(args, "classes", None), num_classes)
    if listed is not None:
        if pool is not None:
            missing = sorted(set(listed) - set(pool))
            if missing:
                raise UserError(f"--classes must be among {pool_what} ({format_classes(pool)}), got "
                                f"{format_classes(missing)}{pool_fix}")
    base = listed if listed is not None else pool
    n = getattr(args, "sample_classes", None)
    if n is not None:
        avail = num_classes if base is None else len(base)
        if not 1 <= n <= avail:
            where = ("the model's classes" if base is None else "the classes of --classes" if listed is not None
                     else pool_what or "the classes available")
            raise UserError(f"--sample-classes must be a count in [1, {avail}] ({where}), got {n}")
    return select_classes(num_classes, base, getattr(args, "sample_seed", 0), sample=n)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, >= 1 (default: torch's choice)")


def add_loader_args(p: argparse.ArgumentParser) -> None:
    """--num-workers and --precision: how batches are read and computed (wire ``run`` with ``with_throughput``)."""
    g = p.add_argument_group("throughput")
    g.add_argument("--num-workers", type=int, default=0, metavar="N",
                   help="worker processes decoding the images of lazily loaded datasets (imagefolder), kept for the "
                        "whole command; the batches are the same for every N (samples, order, values); the "
                        "in-memory datasets (digits, MNIST, CIFAR-10) need none. Batches are pinned when the "
                        "device is CUDA")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
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


def _blocking_ancestor(path: str) -> str | None:
    """The nearest existing ancestor of ``path`` when it is not a directory (a file in the way), else None."""
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)
    return parent if parent and not os.path.isdir(parent) else None


def _probe_writable(directory: str) -> str | None:
    """None when a file can be created in ``directory`` (the way atomic writes create theirs), else why not."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".wfkern-probe-", dir=directory)
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    try:
        os.remove(probe)
    except OSError:
        pass
    return None


def _check_target_file(path: str, what: str, shown: str) -> None:
    """``path`` may be (re)placed by a file: nothing, or a regular file; not a directory or a device."""
    if os.path.isdir(path):
        raise UserError(f"{what} must be a file path, got a directory {shown!r}; remove it or choose another name")
    if os.path.lexists(path) and not (os.path.isfile(path) or os.path.islink(path)):
        raise UserError(f"{what} must be a regular file path, got {shown!r}, which is not a regular file")


def check_output_file(path: str, what: str) -> str:
    """Fail now, with one line, if the command could not write the file ``path`` when its work is done.

    Checks: not an existing directory or special file, a parent folder that exists (a file in its place
    is named) and in which a file can be created. Used by every command that writes a file.
    """
    if not path:
        raise UserError(f"{what} must be a file path, got an empty string")
    full = os.path.abspath(path)
    _check_target_file(full, what, path)
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        blocker = _blocking_ancestor(full)
        if blocker is not None:
            raise UserError(f"{what} must be in a directory, got {path!r}, but {blocker} is a file")
        raise UserError(f"{what} must be in an existing directory, got {path!r} (no {parent})")
    why = _probe_writable(parent)
    if why is not None:
        raise UserError(f"{what} must be in a writable directory, got {path!r} (creating a file in {parent} fails: {why})")
    return path


def check_output_dir(path: str, what: str, files: tuple[str, ...] = (), dirs: tuple[str, ...] = (), *,
                     create: bool = True) -> str:
    """Create the output folder ``path`` and fail now, with one line, if the command could not write in it.

    Args:
        path: the folder (created with its parents).
        what: the option's name for messages ("--out-dir").
        files: names of the files the command will write inside it (each may not be a directory).
        dirs: names of the sub-folders it will write into (each may not be a file).
        create: False checks the same without creating anything (a missing folder: its nearest existing
            ancestor must take new files), for a command that must leave no folder behind when it fails.
    Returns:
        ``path``.
    """
    if not path:
        raise UserError(f"{what} must be a directory path, got an empty string")
    full = os.path.abspath(path)
    if os.path.exists(full) and not os.path.isdir(full):
        raise UserError(f"{what} must be a directory, got {path!r}, which is a file")
    blocker = _blocking_ancestor(full)
    if blocker is not None:
        raise UserError(f"{what} must be a writable directory, got {path!r}, but {blocker} is a file")
    if create:
        try:
            os.makedirs(full, exist_ok=True)
        except OSError as e:
            raise UserError(f"{what} must be a writable directory, got {path!r} ({e.strerror})") from e
        why = _probe_writable(full)
        if why is not None:
            raise UserError(f"{what} must be a writable directory, got {path!r} (creating a file in it fails: {why})")
    else:
        existing = full
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        why = _probe_writable(existing)
        if why is not None:
            raise UserError(f"{what} must be a writable directory, got {path!r} (creating a file in {existing} "
                            f"fails: {why})")
    for name in files:
        _check_target_file(os.path.join(full, name), what, os.path.join(path, name))
    for name in dirs:
        sub = os.path.join(full, name)
        if os.path.lexists(sub) and not os.path.isdir(sub):
            raise UserError(f"{what} must be a writable directory, got {path!r}, but {os.path.join(path, name)} "
                            "is a file where a folder goes")
        if os.path.isdir(sub):
            why = _probe_writable(sub)
            if why is not None:
                raise UserError(f"{what} must be a writable directory, got {path!r} (creating a file in "
                                f"{os.path.join(path, name)} fails: {why})")
    return path


def ensure_dir(path: str, what: str) -> str:
    """Create ``path`` (and parents) or raise a one-line error (``check_output_dir`` without file names)."""
    return check_output_dir(path, what)


def ensure_parent(path: str, what: str) -> str:
    """Check that the output file ``path`` can be written (``check_output_file``)."""
    return check_output_file(path, what)
