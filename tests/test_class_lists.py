"""Class lists (--classes): one parser that checks every bound before it expands a range."""

from __future__ import annotations

import time

import pytest

from wfkern.cli._common import class_list_items, parse_class_list
from wfkern.cli.main import UserError, main
from wfkern.metrics.classes import select_classes
from wfkern.models import create_model
from wfkern.train import ModelConfig, save_checkpoint


@pytest.mark.parametrize("text,expected", [
    ("3", [3]), ("0,3,5", [0, 3, 5]), ("0-4,7", [0, 1, 2, 3, 4, 7]), (" 1 - 3 , 9 ", [1, 2, 3, 9]),
    ("3,1-3,3,2", [1, 2, 3]),  # duplicates and overlapping ranges count once
    ("3,", [3]), ("007", [7]), ("9-9", [9]),
])
def test_class_lists_that_parse(text, expected):
    assert parse_class_list(text, 10) == expected
    assert parse_class_list(None, 10) is None


@pytest.mark.parametrize("text,message", [
    # bounds: checked on the items as typed, before anything is expanded
    ("0-99999999999", "--classes must be class indices in [0, 10) (the model has 10 classes), got 0-99999999999"),
    ("1,10,11", "--classes must be class indices in [0, 10) (the model has 10 classes), got 10, 11"),
    ("2-" + "9" * 5000, "(the model has 10 classes), got 2-999"),  # past int()'s 4300-digit limit: still one line
    ("9" * 40, "(the model has 10 classes), got 9999"),
    # form
    ("5-2", "--classes must be class indices >= 0 and ranges low-high, got '5-2' in '5-2'"),
    ("-3", "--classes must be class indices >= 0 and ranges low-high, got '-3' in '-3'"),
    ("1,-3-5", "got '-3-5' in '1,-3-5'"),
    ("4--1", "got '4--1' in '4--1'"),
    ("cat,dog", "--classes must be class indices like 3, 0,3,5 or 0-4, got 'cat,dog'; for N random classes use "
                "--sample-classes N"),
    ("0-4-7", "must be class indices like 3, 0,3,5 or 0-4, got '0-4-7'"),
    ("1.5", "must be class indices like 3"), ("٣", "must be class indices like 3"),  # an Arabic-Indic three
    (",", "--classes must name at least one class, got ','"), ("", "must name at least one class"),
])
def test_bad_class_lists_are_one_line_errors_before_any_expansion(text, message):
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        parse_class_list(text, 10)
    assert time.perf_counter() - t0 < 1.0  # no range of 10**11 classes was built
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_form_alone_never_expands_a_range():
    items = class_list_items("0-99999999999,3")
    assert [(lo, hi, item) for lo, hi, item in items] == [(0, 99999999999, "0-99999999999"), (3, 3, "3")]
    with pytest.raises(UserError, match="ranges low-high"):
        class_list_items("9-1")


def test_select_classes_checks_a_range_by_its_ends():
    with pytest.raises(ValueError, match=r"in \[0, 10\) or one index, got range\(0, 100000000000\)"):
        select_classes(10, range(10**11))
    with pytest.raises(ValueError, match=r"got range\(-1, 3\)"):
        select_classes(10, range(-1, 3))
    assert select_classes(10, range(2, 5)) == [2, 3, 4] and select_classes(10, range(9, 6, -1)) == [7, 8, 9]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    save_checkpoint(str(path), create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)),
                    ModelConfig("small_cnn", 10, 1, 8, {"widths": [8, 16, 16]}, "digits"))
    return str(path)


@pytest.mark.parametrize("command", [
    ["evaluate", "--original", "--metrics", "acc", "--no-progress", "--out"],
    ["baseline", "--method", "ssd", "--no-progress", "--out-dir"],
])
@pytest.mark.parametrize("classes,message", [
    ("0-99999999999", "--classes must be class indices in [0, 10) (the model has 10 classes), got 0-99999999999"),
    ("3-1", "--classes must be class indices >= 0 and ranges low-high, got '3-1'"),
    ("-2", "--classes must be class indices >= 0 and ranges low-high, got '-2'"),
    ("zero", "--classes must be class indices like 3, 0,3,5 or 0-4, got 'zero'"),
])
def test_commands_refuse_bad_class_lists_in_one_line(command, classes, message, checkpoint, tmp_path, capsys):
    argv = [command[0], "--checkpoint", checkpoint, *command[1:], str(tmp_path / "out"), f"--classes={classes}"]
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"wfkern {command[0]}: error: ") and message in lines[0], lines[0]
