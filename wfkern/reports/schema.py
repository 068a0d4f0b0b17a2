"""The shape of a ``wfkern.evaluate`` result, as far as a report reads it: a declaration, one rule per field.

Three stages: ``result_fields`` describes what each key must be (``(key, value, rule)`` in the order a reader
meets them, each field declared only once the fields it depends on have passed), a rule checks one value (None,
or the expectation it fails), and ``check_results`` acts on the first failure with one line naming the key.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Optional

from wfkern.unlearn.state import history_record_problem

__all__ = ["check_results", "result_fields", "NUMBER_KEYS", "ROW_KEYS", "COST_NUMBERS"]

NUMBER_KEYS = ("acc_r", "acc_f", "zrf", "mia", "mia_prob", "attack_acc", "rt", "insertion_auc", "deletion_auc",
               "probe_acc_f", "probe_acc_r", "rft_acc_f", "rft_acc_r", "mia_eff", "mia_eff_entropy",
               "mia_eff_m_entropy")
ROW_KEYS = NUMBER_KEYS + ("orig_acc", "orig_acc_r")
COST_NUMBERS = ("all_classes_runs", "all_classes_seconds", "all_classes_bytes")

_MISSING = object()  # a key the result does not hold


class Problem(NamedTuple):
    """Why a value fails its rule: what it must do, what it is, and (for a record's field) which field."""

    expectation: str
    got: str
    subkey: Optional[str] = None


Rule = Callable[[object], Optional[Problem]]


def _short(value) -> str:
    if value is _MISSING:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def rule(ok: Callable[[object], bool], expectation: str, shown: Callable[[object], str] = _short) -> Rule:
    """A rule from a predicate: the value passes when ``ok(value)``, else it must meet ``expectation`` (and is
    shown by ``shown``: its repr, cut to 60 characters)."""
    return lambda v: None if ok(v) else Problem(expectation, shown(v))


def _typed(typ: type, expectation: str) -> Rule:
    return rule(lambda v: isinstance(v, typ) and not (typ is int and isinstance(v, bool)), expectation)


_NUMBER_OR_NULL = rule(lambda v: v is None or _is_num(v), "be a number or null")
_OBJECT = _typed(dict, "be a JSON object")
_PRESENT = rule(lambda v: v is not _MISSING, "be present (is this a `wfkern evaluate` results.json?)")


def _numbers(prefix: str, record: dict, keys: tuple) -> Iterator[tuple[str, object, Rule]]:
    for key in keys:
        yield f"{prefix}.{key}", record.get(key), _NUMBER_OR_NULL


def _history_rule(previous: Optional[int]) -> Rule:
    """A history.jsonl record by the rule every reader of that file applies (``history_record_problem``)."""
    def check(record) -> Optional[Problem]:
        problem = history_record_problem(record, previous)
        return None if problem is None else Problem(problem[1], _short(problem[2]), problem[0])
    return check


def result_fields(res: dict) -> Iterator[tuple[str, object, Rule]]:
    """Every checked field of ``res`` as ``(key, value, rule)``, in reading order (lazily: a field is declared
    only after the ones its own declaration reads have passed)."""
    for key in ("summary", "classes", "per_class", "num_classes"):
        yield key, res.get(key, _MISSING), _PRESENT
    yield "num_classes", res["num_classes"], _typed(int, "be an integer >= 1")
    yield "num_classes", res["num_classes"], rule(lambda v: v >= 1, "be an integer >= 1", str)
    yield from _summary_fields(res["summary"])
    yield "classes", res["classes"], _typed(list, "be a list of class indices")
    yield "classes", res["classes"], rule(bool, "hold at least one class")
    yield "per_class", res["per_class"], _typed(dict, "be a JSON object (class -> metrics)")
    for i, c in enumerate(res["classes"]):
        yield from _class_fields(res, i, c)
    yield from _optional_fields(res)
    yield from _relations_fields(res.get("relations"))
    yield from _history_fields(res.get("unlearn_history"))


def _summary_fields(summary) -> Iterator[tuple[str, object, Rule]]:
    yield "summary", summary, _OBJECT
    yield from _numbers("summary", summary, NUMBER_KEYS)
    for key in ("n_classes", "rt_capped"):
        if summary.get(key) is not None:
            yield f"summary.{key}", summary[key], _typed(int, "be an integer")
    if summary.get("insertion_auc") is not None:
        yield "summary.deletion_auc", summary.get("deletion_auc"), rule(_is_num, "be a number beside insertion_auc")
        yield "summary.n_classes", summary.get("n_classes"), _typed(int, "be an integer")


def _class_fields(res: dict, i: int, c) -> Iterator[tuple[str, object, Rule]]:
    n = res["num_classes"]
    yield f"classes.{i}", c, rule(lambda v: _is_int(v) and 0 <= v < n, f"be a class index in [0, {n})")
    row = res["per_class"].get(str(c), res["per_class"].get(c))
    yield f"per_class.{c}", row if row is not None else _MISSING, rule(lambda v: v is not _MISSING,
                                                                       "be present for every evaluated class")
    yield f"per_class.{c}", row, _OBJECT
    yield from _numbers(f"per_class.{c}", row, ROW_KEYS)
    insdel = row.get("insdel")
    if insdel is None:
        return
    yield f"per_class.{c}.insdel", insdel, _OBJECT
    k = insdel.get("k")
    yield f"per_class.{c}.insdel.k", k, rule(lambda v: isinstance(v, list) and all(_is_num(x) for x in v),
                                              "be a list of numbers")
    for key in ("insertion_curve", "deletion_curve"):
        yield f"per_class.{c}.insdel.{key}", insdel.get(key), rule(
            lambda v: isinstance(v, list) and len(v) == len(k) and all(x is None or _is_num(x) for x in v),
            f"be a list of {len(k)} numbers (one per k)")
    for key in ("insertion_auc", "deletion_auc"):
        yield f"per_class.{c}.{key}", row.get(key), rule(_is_num, "be a number beside the curves")


def _optional_fields(res: dict) -> Iterator[tuple[str, object, Rule]]:
    """method, class_names, settings and cost: checked when present."""
    if res.get("method") is not None:
        yield "method", res["method"], _typed(str, "be a string")
    if res.get("class_names") is not None:
        yield "class_names", res["class_names"], rule(
            lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "be a list of strings")
    if res.get("settings") is not None:
        yield "settings", res["settings"], _OBJECT
    cost = res.get("cost")
    if cost is not None:
        yield "cost", cost, _OBJECT
        yield from _numbers("cost", cost, COST_NUMBERS)


def _relations_fields(rel) -> Iterator[tuple[str, object, Rule]]:
    if not rel:
        return
    yield "relations", rel, _OBJECT
    for key in ("classes", "filters"):
        yield f"relations.{key}", rel.get(key), rule(lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
                                                      "be a list of integers")
    n, m = len(rel["classes"]), len(rel["filters"])
    for key in ("member", "relevance"):
        yield f"relations.{key}", rel.get(key), rule(
            lambda g: isinstance(g, list) and len(g) == n and all(
                isinstance(r, list) and len(r) == m and all(_is_num(v) for v in r) for r in g),
            f"be {n} lists of {m} numbers (classes x shared filters)")
    yield "relations.layer", rel.get("layer"), rule(lambda v: isinstance(v, str), "be a layer name")
    if rel.get("top") is not None:
        yield "relations.top", rel["top"], _typed(dict, "be a JSON object (class -> its top filters)")


def _history_fields(hist) -> Iterator[tuple[str, object, Rule]]:
    if hist is None:
        return
    yield "unlearn_history", hist, _typed(list, "be a list of validation records (history.jsonl)")
    previous = None
    for i, record in enumerate(hist):
        yield f"unlearn_history.{i}", record, _history_rule(previous)
        previous = record["step"]


def check_results(res, source: str) -> None:
    """Check that ``res`` has the structure of a ``wfkern.evaluate`` result, as far as a report reads it.

    Raises:
        ValueError: ``wfkern.load_results: key 'per_class.3.acc_r' of <source> must be ..., got ...``.
    """
    if not isinstance(res, dict):
        raise ValueError(f"wfkern.load_results: {source} must hold a `wfkern evaluate` result (a JSON object), "
                         f"got a JSON {type(res).__name__}")
    for key, value, check in result_fields(res):
        problem = check(value)
        if problem is not None:
            key += f".{problem.subkey}" if problem.subkey else ""
            raise ValueError(f"wfkern.load_results: key {key!r} of {source} must {problem.expectation}, "
                             f"got {problem.got}")
