"""Faults: kill -9 during registry writes loses no committed change and leaves a sound file; SIGTERM drains the
requests in flight; a restarted server gives the same answers."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import torch

pytest.importorskip("litserve")

from _serve_helpers import ROOT, Server, make_model, request  # noqa: E402

from wfkern.serve.registry import SQLiteForgetStore  # noqa: E402

# Writes random changes for ever; prints each one after its transaction returned (committed).
WRITER = """
import importlib.util, random, sys
spec = importlib.util.spec_from_file_location("registry", sys.argv[3])  # the module alone: no torch to import
registry = sys.modules["registry"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(registry)
store = registry.SQLiteForgetStore(sys.argv[1], num_classes=10)
rng = random.Random(int(sys.argv[2]))
tenants = [t.id for t in store.tenants()]
while True:
    tid, classes = rng.choice(tenants), rng.sample(range(10), rng.randint(1, 3))
    add = rng.random() < 0.6
    (store.add_classes if add else store.remove_classes)(tid, classes, reason="kill test")
    print(tid, "added" if add else "removed", ",".join(map(str, sorted(classes))), flush=True)
"""


REGISTRY = str(ROOT / "wfkern" / "serve" / "registry.py")


def _replay(entries) -> dict[int, set]:
    state: dict[int, set] = {}
    for e in entries:
        held = state.setdefault(e.tenant_id, set())
        if e.action == "added":
            held |= set(e.classes)
        elif e.action == "removed":
            held -= set(e.classes)
    return state


def test_kill_9_during_registry_writes_loses_no_committed_change(tmp_path):
    db = tmp_path / "r.db"
    store = SQLiteForgetStore(str(db), num_classes=10)
    for name in ("a", "b", "c"):
        store.create_tenant(name)
    store.close()
    committed = []
    rng = random.Random(0)
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(round_), REGISTRY], stdout=subprocess.PIPE,
                                text=True, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout))
        reader.start()
        end = time.monotonic() + 30
        while len(lines) < 5 and time.monotonic() < end:  # writing for a while
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(10)
        assert len(lines) >= 5, "the writer wrote nothing"
        committed += [ln.split() for ln in lines if ln.endswith("\n")]  # a line cut by the kill: not reported
        check = SQLiteForgetStore(str(db), num_classes=10)
        assert check.integrity() == "ok"
        changes = [e for e in check.audit() if e.action in ("added", "removed")]
        # every change reported as committed is in the log, in order (one more may have committed unreported)
        assert len(changes) in (len(committed), len(committed) + 1)
        for (tid, action, classes), e in zip(committed, changes):
            assert (int(tid), action, [int(c) for c in classes.split(",")]) == (e.tenant_id, e.action, e.classes)
        committed = [[str(e.tenant_id), e.action, ",".join(map(str, e.classes))] for e in changes]
        # the forgotten classes are exactly what the log says: no change half applied
        state = _replay(check.audit())
        for t in check.tenants():
            assert set(check.forgotten(t.id)) == state.get(t.id, set())
        check.close()
    assert len(committed) >= 30


X = torch.rand(8, 8, generator=torch.Generator().manual_seed(5)).tolist()


def _answers(url: str, key: str) -> list:
    return [request(url + "/v1/predict", {"images": [{"array": X}], "forget": f, "top_k": 10}, key=key)[1]
            for f in ([], [1], [4, 9])]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_faults")
    ckpt, filters = make_model(folder)
    store = SQLiteForgetStore(str(folder / "r.db"), num_classes=10)
    tenant, key = store.create_tenant("t")
    store.add_classes(tenant.id, [6])
    store.close()
    return folder, ckpt, filters, key


def _drain_check(server: Server, key: str) -> None:
    """Three requests wait in a 1 s batching window; SIGTERM; all three are answered and the server exits 0."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        request(server.url + "/v1/predict", {"images": [{"array": X}]}, key=key))) for _ in range(3)]
    for t in threads:
        t.start()
    end = time.monotonic() + 10
    while time.monotonic() < end:  # until all three wait in the batching window
        text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
        if "wfkern_queue_depth 3.0" in text:
            break
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert server.proc.wait(30) == 0, server.log_text()
    assert [r[0] for r in results] == [200, 200, 200], results
    assert all(r[1]["forget"]["applied"] == [6] for r in results)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_a_dead_model_worker_is_a_503_not_a_hang(files):
    folder, ckpt, filters, key = files
    server = Server(ckpt, filters, registry=folder / "r.db", log=folder / "dead.log")
    try:
        server.wait_ready()
        assert request(server.url + "/v1/predict", {"images": [{"array": X}]}, key=key)[0] == 200
        import psutil

        workers = [p for p in psutil.Process(server.proc.pid).children()
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 1
        workers[0].kill()
        end = time.monotonic() + 10
        while time.monotonic() < end:  # dead (a zombie until the server reaps it)
            try:
                if workers[0].status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        start = time.monotonic()
        status, answer, _ = request(server.url + "/v1/predict", {"images": [{"array": X}]}, key=key)
        assert status == 503 and "model worker must be running" in answer["error"]["message"]
        assert time.monotonic() - start < 5
        assert request(server.url + "/healthz")[0] == 503
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests(files):
    folder, ckpt, filters, key = files
    server = Server(ckpt, filters, "--batch-timeout", "1.0", "--max-batch-size", "8", registry=folder / "r.db",
                    log=folder / "drain.log")
    try:
        server.wait_ready()
        _drain_check(server, key)
    finally:
        server.stop()


@pytest.mark.slow
def test_a_restarted_server_answers_the_same(files):
    folder, ckpt, filters, key = files
    server = Server(ckpt, filters, "--batch-timeout", "1.0", "--max-batch-size", "8", registry=folder / "r.db",
                    log=folder / "first.log")
    try:
        server.wait_ready()
        before = _answers(server.url, key)
        _drain_check(server, key)
    finally:
        server.stop()
    again = Server(ckpt, filters, registry=folder / "r.db", log=folder / "second.log")
    try:
        again.wait_ready()
        after = _answers(again.url, key)
    finally:
        again.stop()
    assert [a["predictions"] for a in after] == [b["predictions"] for b in before]
    assert [a["forget"] for a in after] == [b["forget"] for b in before]
    assert after[0]["model_fingerprint"] == before[0]["model_fingerprint"]
