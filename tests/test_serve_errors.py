"""Bad input gets a clear one-line error and the server keeps serving: after every case a good request is answered
with the model's own numbers."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest
import torch

pytest.importorskip("litserve")

from _serve_helpers import Server, make_model, oracle, png_b64, probs_of, request  # noqa: E402

from wfkern.serve.registry import SQLiteForgetStore  # noqa: E402

WINDOW = 0.1  # the batching window: long enough to hold requests in flight


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_errors")
    ckpt, filters = make_model(folder)
    store = SQLiteForgetStore(str(folder / "r.db"), num_classes=10)
    _, key = store.create_tenant("t")
    store.close()
    server = Server(ckpt, filters, "--max-batch-size", "8", "--batch-timeout", str(WINDOW), "--max-queue", "2",
                    "--max-images", "3", "--max-side", "64", "--max-request-bytes", "200000",
                    registry=folder / "r.db", log=folder / "server.log")
    try:
        server.wait_ready()
        yield {"url": server.url, "key": key, "wf": oracle(ckpt, filters), "server": server}
    finally:
        server.stop()


GOOD_X = torch.rand(8, 8, generator=torch.Generator().manual_seed(3))


def assert_still_serving(srv):
    status, body, _ = request(srv["url"] + "/v1/predict", {"images": [{"array": GOOD_X.tolist()}], "forget": [2],
                                                          "top_k": 10}, key=srv["key"])
    assert status == 200, body
    with torch.no_grad():
        want = torch.softmax(srv["wf"](((GOOD_X - 0.3053) / 0.3760).view(1, 1, 8, 8), forget=torch.tensor([[2]])), 1)[0]
    got = probs_of(body)
    assert max(abs(got[c] - float(want[c])) for c in range(10)) < 1e-5


def post(srv, body=None, raw=None, key="default", headers=None):
    return request(srv["url"] + "/v1/predict", body, raw=raw, key=srv["key"] if key == "default" else key,
                   headers=headers)


def one_line(answer: dict) -> str:
    message = answer["error"]["message"]
    assert "\n" not in message and "Traceback" not in message
    return message


ARR = {"array": [[0.5] * 8] * 8}
NOISE = torch.randint(0, 256, (32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("case, status, words", [
    (dict(raw=b'{"images": [1, 2'), 400, "must be JSON"),
    (dict(raw=b'[1, 2]'), 400, "must be a JSON object, got a JSON list"),
    (dict(body={"image": [ARR]}), 400, "only the keys images, forget, top_k, got 'image'"),
    (dict(body={"images": []}), 400, "images must be a non-empty list"),
    (dict(body={"images": [{"data": "%%%not-base64%%%"}]}), 400, "images[0].data must be base64 text"),
    (dict(body={"images": [ARR, {"data": base64.b64encode(b"hello world").decode()}]}), 400,
     "images[1].data must be a PNG or JPEG image"),
    (dict(body={"images": [{"data": base64.b64encode(base64.b64decode(png_b64(NOISE))[:400]).decode()}]}), 400,
     "must be a complete PNG image"),
    (dict(body={"images": [png_b64(torch.zeros(3, 8, 8, dtype=torch.uint8))]}), 422, "must have 1 channel"),
    (dict(body={"images": [png_b64(torch.zeros(8, 500, dtype=torch.uint8))]}), 413, "at most 64 pixels a side"),
    (dict(body={"images": [ARR] * 4}), 413, "at most 3 images a request, got 4"),
    (dict(body={"images": [{"array": [[0.5] * 300] * 300}]}), 413, "at most 200000 bytes"),
    (dict(body={"images": [ARR], "forget": ["zebra"]}), 422, "class names of the model"),
    (dict(body={"images": [ARR], "forget": [10]}), 422, "class ids in [0, 10), got 10"),
    (dict(body={"images": [ARR], "top_k": 0}), 400, "top_k must be an integer in [1, 10], got 0"),
    (dict(body={"images": [ARR]}, key=None), 401, "got no Authorization header"),
    (dict(body={"images": [ARR]}, key="wfk_1_forged"), 403, "matches no tenant"),
    (dict(body={"images": [ARR]}, key=None, headers={"Authorization": "Basic dXNlcjpwdw=="}), 401,
     "got a 'Basic' header"),
])
def test_bad_requests_are_refused_and_the_server_keeps_serving(srv, case, status, words):
    got, answer, _ = post(srv, **case)
    assert got == status and answer["error"]["status"] == status, answer
    assert words in one_line(answer)
    assert_still_serving(srv)


def test_a_bad_request_in_a_batch_fails_only_itself(srv):
    out = {}

    def send(name, body):
        out[name] = post(srv, body)

    threads = [threading.Thread(target=send, args=("bad", {"images": [ARR, {"data": "AAAA"}]})),
               threading.Thread(target=send, args=("good", {"images": [ARR, ARR]}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out["bad"][0] == 400 and out["good"][0] == 200 and len(out["good"][1]["predictions"]) == 2
    assert_still_serving(srv)


def test_a_full_queue_answers_503_with_retry_after(srv):
    for _ in range(5):  # on a loaded machine the two may not overlap in flight: try again
        results = []
        threads = [threading.Thread(target=lambda: results.append(post(srv, {"images": [ARR]}))) for _ in range(2)]
        for t in threads:
            t.start()
        end, full = time.monotonic() + 2, False
        while not full and time.monotonic() < end:  # until both are in flight: the queue (2) is full
            full = "wfkern_queue_depth 2.0" in metrics(srv)
        answer = post(srv, {"images": [ARR]}) if full else None
        for t in threads:
            t.join(30)
        assert sorted(r[0] for r in results) == [200, 200]
        if answer is not None and answer[0] == 503:
            break
    assert answer is not None, "the two requests never overlapped in flight in five tries"
    status, body, headers = answer
    assert status == 503 and headers.get("retry-after") == "1" and "queue must have room" in one_line(body)
    assert_still_serving(srv)


def metrics(srv) -> str:
    import urllib.request

    return urllib.request.urlopen(srv["url"] + "/metrics", timeout=10).read().decode()


def _raw_http(srv, body: bytes, declared: int, read: bool) -> None:
    port = int(srv["url"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {srv['key']}\r\nContent-Length: {declared}\r\n\r\n".encode() + body)
        if read:
            s.recv(10)


def test_clients_that_disconnect_mid_request(srv):
    body = json.dumps({"images": [ARR]}).encode()
    _raw_http(srv, body[:20], len(body), read=False)  # gone while sending its body
    _raw_http(srv, body, len(body), read=False)  # gone while its request is in the batching window
    time.sleep(WINDOW + 0.2)
    assert_still_serving(srv)
    status, _, _ = request(srv["url"] + "/healthz")
    assert status == 200
