"""Fault injection: `wfkern unlearn` killed with SIGKILL at seeded points, resumed until it finishes.

The run must end with the gates of an uninterrupted run, bit for bit, a complete history.jsonl and
no temporary file in its folder. The killed runs go through a small wrapper around the CLI's ``main``
that only widens the windows a kill can land in (each safetensors save pauses after writing its
temporary, each history record lands in two writes with a pause between, the history rewrite on
resume pauses halfway); the uninterrupted reference is the plain CLI.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from wfkern.models import create_model
from wfkern.train import ModelConfig, save_checkpoint

SEED = 20261127
SLOW = 0.1  # seconds each widened window stays open
RUN_FILES = ["gates.safetensors", "history.jsonl", "manifest.json", "unlearn_state.safetensors"]
# Tiny: 1024 training digits in batches of 16 (64 steps an epoch), 2 validations an epoch, 3 epochs.
ARGS = ["--max-epochs", "3", "--evals-per-epoch", "2", "--batch-size", "16", "--patience", "100",
        "--threads", "1", "--no-progress"]

WRAPPER = r'''
import importlib, os, sys, time
SLOW = float(sys.argv[1])
import safetensors.torch as st
_save = st.save_file
def save_file(tensors, filename, metadata=None):
    _save(tensors, filename, metadata=metadata)
    # The temporary is complete, not yet renamed over the target; the run's one filters write pauses longer.
    time.sleep(SLOW * (3 if "base_fingerprint" in (metadata or {}) else 1))
st.save_file = save_file  # before wfkern binds it
atomic = importlib.import_module("wfkern._atomic")
state = importlib.import_module("wfkern.unlearn.state")  # (wfkern.unlearn is also a function's name)
def atomic_write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2]); f.flush(); time.sleep(3 * SLOW); f.write(text[len(text) // 2:])
    atomic.atomic_write(path, write)
state.atomic_write_text = atomic_write_text
class SlowOS:
    """os for wfkern.unlearn.state: a history record is written short (half), then the rest."""
    def __getattr__(self, name):
        return getattr(os, name)
    def write(self, fd, data):
        if data[:1] == b"{" and len(data) > 2:
            n = os.write(fd, data[: len(data) // 2]); time.sleep(SLOW); return n
        return os.write(fd, data)
state.os = SlowOS()
from wfkern.cli.main import main
sys.exit(main(sys.argv[2:]))
'''


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("WFKERN_FORCE_REFERENCE", None)
    return env


def _temp_file(run: str, target: str) -> str | None:
    """The complete-so-far temporary of ``target`` inside its atomic-write folder, if one exists now."""
    for name in os.listdir(run):
        if name.startswith(f".{target}.tmp-"):
            inner = os.path.join(run, name, target)
            try:
                if os.path.getsize(inner) > 0:
                    return inner
            except OSError:
                pass
    return None


def _history_bytes(run: str) -> bytes:
    try:
        with open(os.path.join(run, "history.jsonl"), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def _mtime(path: str):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _start(run: str, checkpoint: str, log, wrapped: bool = True) -> subprocess.Popen:
    argv = ["unlearn", "--checkpoint", checkpoint, "--out-dir", run, *ARGS]
    if os.path.isfile(os.path.join(run, "unlearn_state.safetensors")):
        argv.append("--resume")  # killed before its first checkpoint: a fresh start is all there is
    if wrapped:
        cmd = [sys.executable, "-c", WRAPPER, str(SLOW), *argv]
    else:
        cmd = [sys.executable, "-m", "wfkern.cli.main", *argv]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())


def _wait_for(proc: subprocess.Popen, condition, timeout: float = 90.0) -> bool:
    """Poll ``condition`` every 2 ms while ``proc`` runs; False if it exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return bool(condition())
        time.sleep(0.002)
    raise AssertionError(f"timed out after {timeout}s waiting for a kill point")


def test_sigkill_at_seeded_points_then_resume_matches_an_uninterrupted_run(tmp_path):
    checkpoint = str(tmp_path / "model.safetensors")
    torch.manual_seed(0)
    save_checkpoint(checkpoint, create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)),
                    ModelConfig("small_cnn", 10, 1, 8, {"widths": [8, 16, 16]}, "digits"))
    ref_dir, run = str(tmp_path / "reference"), str(tmp_path / "killed")
    os.mkdir(run)
    logs = open(tmp_path / "log.txt", "w+")
    reference = _start(ref_dir, checkpoint, logs, wrapped=False)  # runs alongside the killed ones
    state_path = os.path.join(run, "unlearn_state.safetensors")

    rng = random.Random(SEED)

    def training():  # a checkpoint finished in this attempt; kill a random moment into the next steps
        begun = _mtime(state_path)
        def done():
            return _mtime(state_path) not in (None, begun) and _temp_file(run, "unlearn_state.safetensors") is None

        return done, rng.uniform(0.03, 0.25)

    points = {
        "training": training,
        "checkpoint write": lambda: (lambda: _temp_file(run, "unlearn_state.safetensors") is not None, 0.0),
        "history append": lambda: (lambda: _history_bytes(run)[-1:] not in (b"", b"\n"), 0.0),
        "history rewrite on resume": lambda: (lambda: _temp_file(run, "history.jsonl") is not None, 0.0),
        "filters write": lambda: (lambda: _temp_file(run, "gates.safetensors") is not None, 0.0),
    }
    middle = ["checkpoint write", "history append", "history rewrite on resume"]
    rng.shuffle(middle)
    # First a kill mid-training (after which a checkpoint and a history exist, so every later start
    # resumes and rewrites the history), then the others in a seeded order; the final write last.
    plan = ["training", *middle, "filters write"]
    left_behind = {}
    for point in plan:
        proc = _start(run, checkpoint, logs)
        condition, delay = points[point]()
        hit = _wait_for(proc, condition)
        if hit and delay:
            time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=60)
        if not (hit and rc == -signal.SIGKILL):
            logs.seek(0)
            raise AssertionError(f"the run ended (rc {rc}) before the kill point '{point}':\n{logs.read()[-3000:]}")
        left_behind[point] = (sorted(n for n in os.listdir(run) if ".tmp" in n), _history_bytes(run)[-1:])
    # Kills inside an atomic write leave its temporary folder (the next write of that file removes it);
    # the kill inside an append leaves a torn last line (the next resume drops it).
    for p in ("checkpoint write", "history rewrite on resume", "filters write"):
        assert left_behind[p][0], left_behind
    assert left_behind["history append"][1] not in (b"", b"\n"), left_behind

    for _ in range(2):  # resume until it finishes (the run is complete after one)
        proc = _start(run, checkpoint, logs)
        if proc.wait(timeout=120) == 0:
            break
    logs.seek(0)
    output = logs.read()
    assert proc.returncode == 0, output
    assert reference.wait(timeout=120) == 0, output

    ours = load_file(os.path.join(run, "gates.safetensors"))
    theirs = load_file(os.path.join(ref_dir, "gates.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:  # bit for bit
        assert torch.equal(ours[key].view(torch.int32), theirs[key].view(torch.int32)), key

    def history(folder):
        raw = open(os.path.join(folder, "history.jsonl"), "rb").read()
        assert raw.endswith(b"\n"), raw[-80:]
        return [json.loads(line) for line in raw.decode("utf-8").splitlines()]

    strip = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    got, want = history(run), history(ref_dir)
    assert [r["eval"] for r in got] == list(range(1, 7))  # 3 epochs x 2 validations, each once, in order
    assert strip(got) == strip(want)
    assert sorted(os.listdir(run)) == RUN_FILES, os.listdir(run)  # no temporary left
    # The manifest written at the end of the resumed run describes the same run as the uninterrupted one's.
    manifests = [json.load(open(os.path.join(folder, "manifest.json"), encoding="utf-8")) for folder in (run, ref_dir)]
    assert manifests[0]["seeds"] == manifests[1]["seeds"] and manifests[0]["data"] == manifests[1]["data"]
    logs.close()
