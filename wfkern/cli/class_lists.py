"""Which classes a command covers: --classes (exactly these, bounds checked before any range is expanded) and
--sample-classes (N at random)."""

from __future__ import annotations

import argparse
import math
import re

from wfkern.cli.errors import UserError

__all__ = ["add_class_args", "class_list_items", "parse_class_list", "resolve_classes"]

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
