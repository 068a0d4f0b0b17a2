"""history.jsonl across kills: the resume rewrite is atomic, a torn last line is dropped, nothing else is lost."""

from __future__ import annotations

import builtins
import json
import os

import pytest

from wfkern.unlearn.state import HistoryLog


def _records(n: int, start: int = 1) -> list[dict]:
    return [{"eval": i, "step": 2 * i, "val_objective": 1.0 / i, "best": i % 2 == 0} for i in range(start, start + n)]


def _write(path, records, tail: str = "") -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records) + tail)


def _read(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception` handlers)."""


class _DiesOnWrite:
    """A file opened for writing whose process dies before the data lands."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, text):
        raise _Killed()


def test_a_kill_during_the_resume_rewrite_keeps_the_old_history(tmp_path, monkeypatch):
    path = tmp_path / "history.jsonl"
    records = _records(15)
    _write(path, records)
    real_open = builtins.open

    def dying_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)  # opening for "w" truncates, as a real open does
        if "w" in mode and os.path.basename(os.fspath(file)) == "history.jsonl":
            return _DiesOnWrite(f)
        return f

    monkeypatch.setattr(builtins, "open", dying_open)
    with pytest.raises(_Killed):
        HistoryLog(str(path), keep_until_step=20)  # keeps records 1..10
    monkeypatch.setattr(builtins, "open", real_open)
    assert _read(path) == records  # the plain open("w") version left an empty file here
    # The next resume starts from the intact file: nothing is lost (the old code kept 9 of 15 here).
    log = HistoryLog(str(path), keep_until_step=20)
    assert log.records == records[:10] and _read(path) == records[:10]
    for r in records[10:]:
        log.append(r)
    assert _read(path) == records
    assert sorted(os.listdir(tmp_path)) == ["history.jsonl"]


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    path = tmp_path / "history.jsonl"
    records = _records(4)
    for tail in ['{"eval": 5, "st', json.dumps(_records(1, 5)[0])]:  # cut mid-record, or just before its newline
        _write(path, records, tail)
        log = HistoryLog(str(path), keep_until_step=100)
        assert log.records == records and _read(path) == records
        log.append(_records(1, 5)[0])
        assert _read(path) == records + _records(1, 5)


def test_lines_past_the_checkpoint_are_dropped(tmp_path):
    path = tmp_path / "history.jsonl"
    _write(path, _records(6))
    log = HistoryLog(str(path), keep_until_step=8)
    assert [r["eval"] for r in log.records] == [1, 2, 3, 4]
    assert _read(path) == log.records


def test_a_corrupt_line_before_the_end_is_a_clear_error(tmp_path):
    path = tmp_path / "history.jsonl"
    records = _records(3)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(records[0]) + "\n" + "garbage\n" + json.dumps(records[2]) + "\n")
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"history.jsonl:2 must be a JSON record, got 'garbage'; delete"):
        HistoryLog(str(path), keep_until_step=100)
    assert path.read_bytes() == before


def test_a_fresh_run_starts_an_empty_history_and_appends_whole_lines(tmp_path):
    path = tmp_path / "history.jsonl"
    _write(path, _records(3))
    log = HistoryLog(str(path))  # not resuming: the old run's history is replaced
    assert _read(path) == [] and log.records == []
    for r in _records(3):
        log.append(r)
    assert _read(path) == _records(3) == log.records
    assert sorted(os.listdir(tmp_path)) == ["history.jsonl"]
    memory = HistoryLog(None)
    memory.append({"eval": 1})
    assert memory.records == [{"eval": 1}] and sorted(os.listdir(tmp_path)) == ["history.jsonl"]
