"""`wfkern serve --engine ray`: the same request handler in Ray Serve replicas (@serve.batch, the forget set in the
payload), on a local Ray instance; answers equal wf(x, forget=...) alone. Slow: Ray takes a while to start."""

from __future__ import annotations

import threading

import pytest
import torch

pytest.importorskip("litserve")
pytest.importorskip("ray.serve")

from _serve_helpers import Server, make_model, oracle, probs_of, request  # noqa: E402


@pytest.mark.slow
def test_ray_serve_replicas_batch_requests_with_their_own_forget_sets(tmp_path):
    ckpt, filters = make_model(tmp_path)
    wf = oracle(ckpt, filters)
    server = Server(ckpt, filters, "--engine", "ray", "--replicas", "2", "--batch-timeout", "0.05",
                    log=tmp_path / "server.log")
    answers = {}
    jobs = [(n, [n % 10, (3 * n) % 10] if n % 3 else [],
             torch.rand(8, 8, generator=torch.Generator().manual_seed(n))) for n in range(24)]
    try:
        server.wait_ready(timeout=180)

        def client(n, forget, x01):
            answers[n] = request(server.url + "/v1/predict", {"images": [{"array": x01.tolist()}], "forget": forget,
                                                              "top_k": 10}, timeout=120)

        threads = [threading.Thread(target=client, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert server.stop(timeout=120) == 0, server.log_text()
    finally:
        server.stop()
    shared = 0
    for n, forget, x01 in jobs:
        status, body, _ = answers[n]
        assert status == 200, body
        assert body["forget"]["applied"] == sorted(set(forget))
        with torch.no_grad():
            x = ((x01 - 0.3053) / 0.3760).view(1, 1, 8, 8)
            want = torch.softmax(wf(x, forget=torch.tensor([sorted(set(forget)) or [-1]])), 1)[0]
        got = probs_of(body)
        assert max(abs(got[c] - float(want[c])) for c in range(10)) < 1e-5
        shared += body["batch"]["requests"] > 1
    assert shared > 0  # @serve.batch stacked requests into one forward
