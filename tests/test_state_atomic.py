"""wfkern._atomic: the file mode a plain open() gives, and clean-up of temporaries left by killed writes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from wfkern import _atomic
from wfkern._atomic import atomic_write, atomic_write_text, stale_temp_paths

ATOMIC_SOURCE = _atomic.__file__


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def temps(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".tmp" in n)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_new_files_get_the_mode_a_plain_open_gives(tmp_path, mask):
    with umask(mask):
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        atomic_write_text(str(tmp_path / "text.txt"), "x")
        # safetensors creates its own file with mode 0o600 and renames it over the path it is given
        atomic_write(str(tmp_path / "t.safetensors"), lambda tmp: save_file({"a": torch.zeros(2)}, tmp))
    expected = mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~mask
    assert mode(tmp_path / "text.txt") == expected
    assert mode(tmp_path / "t.safetensors") == expected
    assert temps(tmp_path) == []


def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    os.chmod(path, 0o640)
    with umask(0o022):
        atomic_write_text(str(path), "new")
        atomic_write(str(path), lambda tmp: save_file({"a": torch.zeros(2)}, tmp))
    assert mode(path) == 0o640  # what open(path, "w") would have kept
    assert list(load_file(str(path))) == ["a"]


def _stale_dir(directory, name: str, hexpart: str = "0123456789abcdef"):
    d = directory / f".{name}.tmp-{hexpart}"
    d.mkdir()
    (d / name).write_bytes(b"half a fi")
    (d / ".tmpAbC123").write_bytes(b"a writer's own temporary")  # e.g. safetensors' inside our folder
    return d


def test_stale_temporaries_of_the_target_are_removed(tmp_path):
    target = tmp_path / "state.safetensors"
    ours = _stale_dir(tmp_path, "state.safetensors")
    legacy = tmp_path / ".tmp-state.safetensors-ab3_x9zq"  # what the mkstemp version left behind
    legacy.write_bytes(b"torn")
    # Temporaries of other targets, also ones whose names start like ours, are left alone.
    others = [_stale_dir(tmp_path, "state.safetensors.bak"), _stale_dir(tmp_path, "other"),
              tmp_path / ".tmp-state.safetensors-b-ab3_x9zq", tmp_path / ".tmp-state-ab3_x9zq"]
    for p in others[2:]:
        p.write_bytes(b"x")
    assert set(stale_temp_paths(str(target))) == {str(ours), str(legacy)}
    atomic_write_text(str(target), "new")
    assert target.read_text() == "new"
    assert not ours.exists() and not legacy.exists()
    assert all(p.exists() for p in others)


def test_a_live_writers_temporary_is_not_removed(tmp_path):
    target = tmp_path / "f.txt"
    live = _stale_dir(tmp_path, "f.txt")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a writer in progress holds
    try:
        atomic_write_text(str(target), "one")
        assert live.exists() and (live / "f.txt").read_bytes() == b"half a fi"
    finally:
        os.close(fd)
    atomic_write_text(str(target), "two")  # its writer is gone now
    assert not live.exists() and target.read_text() == "two"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), fail)
    assert path.read_text() == "old" and temps(tmp_path) == []


def test_kill_9_mid_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    """A real SIGKILL while the temporary is half written; only the stdlib is imported (fast)."""
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    script = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("atomic", {ATOMIC_SOURCE!r})
atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)
def write(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half"); f.flush()
        print("writing", flush=True)
        time.sleep(60)
atomic.atomic_write({str(target)!r}, write)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    left = stale_temp_paths(str(target))
    assert len(left) == 1 and target.read_bytes() == b"old"
    atomic_write(str(target), lambda tmp: open(tmp, "wb").write(b"new"))
    assert target.read_bytes() == b"new" and temps(tmp_path) == []


def test_concurrent_writers_of_one_target_never_remove_each_others_temporaries(tmp_path):
    path = str(tmp_path / "shared.txt")
    errors = []

    def worker(k: int) -> None:
        try:
            for i in range(40):
                atomic_write_text(path, f"{k}:{i}\n" * 200)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = open(path).read().splitlines()
    assert len(lines) == 200 and len(set(lines)) == 1  # one writer's whole file
    assert temps(tmp_path) == []


def test_long_names_get_a_short_temporary(tmp_path):
    name = "n" * 240  # a 255-byte NAME_MAX leaves no room for ".<name>.tmp-<16 hex>"
    atomic_write_text(str(tmp_path / name), "x")
    assert os.listdir(tmp_path) == [name]


def test_the_directory_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="must exist"):
        atomic_write_text(str(tmp_path / "nope" / "f.txt"), "x")
    assert os.listdir(tmp_path) == []
