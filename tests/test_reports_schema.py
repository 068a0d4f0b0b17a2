"""The results check (reports/schema.py): one damaged field per case, the exact one-line message naming it."""

from __future__ import annotations

import copy
import json

import pytest

from wfkern.reports.schema import check_results, result_fields

from _toy_wf import evaluated_wf


@pytest.fixture(scope="module")
def good():
    res = json.loads(json.dumps(evaluated_wf(insdel_steps=4)))
    res["unlearn_history"] = [{"step": 2}, {"step": 4, "val_acc_r": 0.5}]
    return res


def _set(res: dict, path: str, value) -> dict:
    res = copy.deepcopy(res)
    *parents, last = path.split("/")
    target = res
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is KeyError:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return res


CASES = [
    ("summary", KeyError, "key 'summary' of SRC must be present (is this a `wfkern evaluate` results.json?), got nothing"),
    ("num_classes", True, "key 'num_classes' of SRC must be an integer >= 1, got True"),
    ("num_classes", -2, "key 'num_classes' of SRC must be an integer >= 1, got -2"),
    ("summary", [], "key 'summary' of SRC must be a JSON object, got []"),
    ("summary/zrf", "high", "key 'summary.zrf' of SRC must be a number or null, got 'high'"),
    ("summary/rt_capped", 1.5, "key 'summary.rt_capped' of SRC must be an integer, got 1.5"),
    ("summary/deletion_auc", None, "key 'summary.deletion_auc' of SRC must be a number beside insertion_auc, got None"),
    ("classes", [], "key 'classes' of SRC must hold at least one class, got []"),
    ("classes", {"0": 1}, "key 'classes' of SRC must be a list of class indices, got {'0': 1}"),
    ("classes/1", 3, "key 'classes.1' of SRC must be a class index in [0, 3), got 3"),
    ("per_class/1", KeyError, "key 'per_class.1' of SRC must be present for every evaluated class, got nothing"),
    ("per_class/2", [1], "key 'per_class.2' of SRC must be a JSON object, got [1]"),
    ("per_class/0/orig_acc", "x", "key 'per_class.0.orig_acc' of SRC must be a number or null, got 'x'"),
    ("per_class/0/insdel/k", [0, "a"], "key 'per_class.0.insdel.k' of SRC must be a list of numbers, got [0, 'a']"),
    ("per_class/0/insdel/insertion_curve", [0.5],
     "key 'per_class.0.insdel.insertion_curve' of SRC must be a list of 5 numbers (one per k), got [0.5]"),
    ("per_class/0/deletion_auc", None, "key 'per_class.0.deletion_auc' of SRC must be a number beside the curves, got None"),
    ("method", 3, "key 'method' of SRC must be a string, got 3"),
    ("class_names", ["a", 1], "key 'class_names' of SRC must be a list of strings, got ['a', 1]"),
    ("cost/all_classes_bytes", "1 MB", "key 'cost.all_classes_bytes' of SRC must be a number or null, got '1 MB'"),
    ("relations/filters", [1.5], "key 'relations.filters' of SRC must be a list of integers, got [1.5]"),
    ("relations/member", [[1]], "be 3 lists of"),
    ("relations/layer", None, "key 'relations.layer' of SRC must be a layer name, got None"),
    ("unlearn_history", {}, "key 'unlearn_history' of SRC must be a list of validation records (history.jsonl), got {}"),
    ("unlearn_history/1/step", 1, "key 'unlearn_history.1.step' of SRC must"),
]


@pytest.mark.parametrize("path,value,said", CASES, ids=[f"{p}={v!r}"[:40] for p, v, _ in CASES])
def test_each_damaged_field_is_named(good, path, value, said):
    with pytest.raises(ValueError) as e:
        check_results(_set(good, path, value), "SRC")
    msg = str(e.value)
    assert msg.startswith("wfkern.load_results: ") and said in msg and "\n" not in msg, msg


def test_a_good_result_passes_and_every_field_is_declared(good):
    check_results(good, "SRC")
    keys = [key for key, _, _ in result_fields(good)]
    assert keys[:4] == ["summary", "classes", "per_class", "num_classes"]
    assert "per_class.2.insdel.deletion_curve" in keys and keys[-1] == "unlearn_history.1"
    with pytest.raises(ValueError, match="must hold a `wfkern evaluate` result .* got a JSON list"):
        check_results([good], "SRC")
