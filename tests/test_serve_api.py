"""`wfkern serve`, API v1, against a real server subprocess: answers equal wf(x, forget=...) computed alone, the
tenant registry is applied (a request adds, never removes), metrics and OpenAPI are accurate."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("litserve")

from _serve_helpers import Server, make_model, oracle, png_b64, probs_of, request  # noqa: E402

from wfkern.cli.main import main  # noqa: E402
from wfkern.serve.registry import SQLiteForgetStore  # noqa: E402

DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    ckpt, filters = make_model(folder)
    db = folder / "registry.db"
    store = SQLiteForgetStore(str(db), num_classes=10)
    admin = store.set_admin_key()
    alice, alice_key = store.create_tenant("alice")
    bob, bob_key = store.create_tenant("bob")
    store.add_classes(alice.id, [3], reason="a request from alice")
    store.close()
    server = Server(ckpt, filters, "--max-batch-size", "8", "--batch-timeout", "0.02", "--max-images", "8",
                    registry=db, log=folder / "server.log")
    try:
        server.wait_ready()
        yield {"url": server.url, "wf": oracle(ckpt, filters), "admin": admin, "alice": (alice.id, alice_key),
               "bob": (bob.id, bob_key), "db": db, "server": server}
    finally:
        server.stop()


def expected(wf, x: torch.Tensor, forget: list[int]) -> torch.Tensor:
    """The oracle: softmax of wf(x, forget=that set) for one image computed alone."""
    with torch.no_grad():
        rows = torch.tensor([forget or [-1]])
        return torch.softmax(wf(x.unsqueeze(0), forget=rows), dim=1)[0]


def normalised(pixels01: torch.Tensor) -> torch.Tensor:
    return ((pixels01 - DIGITS_MEAN) / DIGITS_STD).unsqueeze(0)


def test_classes_health_and_fingerprints(setup):
    status, body, _ = request(setup["url"] + "/v1/classes")
    assert status == 200 and body["num_classes"] == 10 and body["mode"] == "wf"
    assert [c["name"] for c in body["classes"]] == [str(i) for i in range(10)]
    assert len(body["model_fingerprint"]) == 64 and len(body["gates_fingerprint"]) == 64 and body["filters_fingerprint"] == body["gates_fingerprint"]
    assert request(setup["url"] + "/healthz")[:2] == (200, {"status": "ok"})


def test_predict_equals_the_model_with_the_tenant_and_request_forget_sets(setup):
    url, wf = setup["url"] + "/v1/predict", setup["wf"]
    _, key = setup["alice"]
    gen = torch.Generator().manual_seed(0)
    x01 = torch.rand(8, 8, generator=gen)
    status, body, _ = request(url, {"images": [{"array": x01.tolist()}], "forget": ["5"], "top_k": 10}, key=key)
    assert status == 200, body
    assert body["forget"] == {"applied": [3, 5], "names": ["3", "5"], "tenant": [3], "request": [5]}
    want = expected(wf, normalised(x01), [3, 5])
    got = probs_of(body)
    assert len(got) == 10 and max(abs(got[c] - float(want[c])) for c in range(10)) < 1e-5
    # the same image without the registry's class differs: the registry really is applied
    assert (expected(wf, normalised(x01), [5]) - want).abs().max() > 1e-2


def test_a_request_cannot_remove_a_tenant_class_and_bob_sees_nothing_of_alice(setup):
    url = setup["url"] + "/v1/predict"
    x = {"array": torch.full((8, 8), 0.5).tolist()}
    _, body, _ = request(url, {"images": [x], "forget": []}, key=setup["alice"][1])
    assert body["forget"]["applied"] == [3]
    _, body, _ = request(url, {"images": [x]}, key=setup["bob"][1])
    assert body["forget"]["applied"] == []
    status, own, _ = request(setup["url"] + "/v1/forget", key=setup["bob"][1])
    assert status == 200 and own["tenant"]["name"] == "bob" and own["tenant"]["forgotten"] == []
    status, audit, _ = request(setup["url"] + "/v1/forget/audit", key=setup["bob"][1])
    assert status == 200 and {e["tenant_id"] for e in audit} == {setup["bob"][0]}


def test_a_registry_entry_outside_the_model_is_an_error_never_ignored(setup):
    store = SQLiteForgetStore(str(setup["db"]))  # no class count: the CLI without --num-classes
    tenant, key = store.create_tenant("other-model")
    store.add_classes(tenant.id, [4, 12])
    store.close()
    status, body, _ = request(setup["url"] + "/v1/predict", {"images": [{"array": [[0.5] * 8] * 8}]}, key=key)
    assert status == 500 and "must be classes of this model ([0, 10)), got 12" in body["error"]["message"]


def test_png_images_and_several_per_request(setup):
    wf = setup["wf"]
    pix = torch.randint(0, 256, (2, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    body = {"images": [png_b64(pix[0]), {"data": png_b64(pix[1])}], "forget": [1, "7"], "top_k": 3}
    status, answer, _ = request(setup["url"] + "/v1/predict", body, key=setup["bob"][1])
    assert status == 200 and len(answer["predictions"]) == 2
    for i in range(2):
        want = expected(wf, normalised(pix[i].float() / 255), [1, 7])
        top = want.topk(3)
        got = answer["predictions"][i]["top_k"]
        assert [g["class"] for g in got] == top.indices.tolist()
        assert max(abs(g["probability"] - float(p)) for g, p in zip(got, top.values)) < 1e-5


def test_admin_endpoints_change_the_registry_at_once(setup):
    url, admin = setup["url"], setup["admin"]
    status, made, _ = request(url + "/v1/admin/tenants", {"name": "carol"}, key=admin)
    assert status == 200 and made["api_key"].startswith("wfk_")
    tid, key = made["tenant"]["id"], made["api_key"]
    status, changed, _ = request(url + f"/v1/admin/tenants/{tid}/forget", {"classes": [2, "4"], "reason": "test"},
                                 key=admin)
    assert status == 200 and changed["forgotten"] == [2, 4]
    x = {"array": torch.zeros(8, 8).tolist()}
    assert request(url + "/v1/predict", {"images": [x]}, key=key)[1]["forget"]["applied"] == [2, 4]
    request(url + f"/v1/admin/tenants/{tid}/unforget", {"classes": [2]}, key=admin)
    assert request(url + "/v1/predict", {"images": [x]}, key=key)[1]["forget"]["applied"] == [4]
    status, rotated, _ = request(url + f"/v1/admin/tenants/{tid}/rotate-key", {}, key=admin)
    assert status == 200 and rotated["api_key"] != key
    assert request(url + "/v1/predict", {"images": [x]}, key=key)[0] == 403  # the old key stops at once
    assert request(url + "/v1/predict", {"images": [x]}, key=rotated["api_key"])[0] == 200
    _, log, _ = request(url + f"/v1/admin/tenants/{tid}/audit", key=admin)
    assert [(e["action"], e["classes"]) for e in log] == [("created", []), ("added", [2, 4]), ("removed", [2]),
                                                          ("key_rotated", [])]
    assert log[1]["reason"] == "test" and log[1]["who"] == "admin-api"
    # a tenant key is no admin key; the CLI sees what the endpoints wrote
    assert request(url + "/v1/admin/tenants", key=rotated["api_key"])[0] == 403
    assert main(["registry", "list", "--db", str(setup["db"])]) == 0


def test_metrics_count_requests_batches_and_latency(setup):
    status, _, headers = request(setup["url"] + "/v1/predict", {"images": [{"array": [[0.0] * 8] * 8}]})
    assert status == 401 and headers.get("www-authenticate") == "Bearer"
    import urllib.request

    text = urllib.request.urlopen(setup["url"] + "/metrics", timeout=10).read().decode()
    assert 'wfkern_requests_total{endpoint="/v1/predict",status="401"}' in text
    assert 'wfkern_requests_total{endpoint="/v1/predict",status="200"}' in text
    count = [ln for ln in text.splitlines() if ln.startswith("wfkern_batch_size_count")]
    assert count and float(count[0].split()[-1]) >= 1
    assert "wfkern_request_latency_seconds_bucket" in text and "wfkern_queue_depth 0.0" in text


def test_openapi_describes_api_v1(setup):
    status, spec, _ = request(setup["url"] + "/openapi.json")
    assert status == 200
    paths = spec["paths"]
    for path in ("/v1/predict", "/v1/classes", "/healthz", "/metrics", "/v1/forget", "/v1/admin/tenants"):
        assert path in paths, path
    assert "/predict" not in paths and "/health" not in paths and "/info" not in paths  # LitServe's are gone
    ref = paths["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    assert set(spec["components"]["schemas"][name]["properties"]) == {"images", "forget", "top_k"}
    answer = paths["/v1/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert answer.endswith("/PredictResponse")
    for code in ("401", "403", "413", "422", "503"):
        assert code in paths["/v1/predict"]["post"]["responses"]


def _batch_counts(text: str, name: str = "wfkern_batch_requests") -> dict[str, float]:
    """{le: cumulative count} of a histogram (default: requests per forward)."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            out[line.split('le="')[1].split('"')[0]] = float(line.split()[-1])
    return out


def test_32_concurrent_clients_get_what_each_request_alone_would(setup):
    """Tenants with different registries and random per-request forget sets, 32 client threads on loopback:
    every answer equals wf(x, forget=that request's set) computed alone, and forwards served several requests."""
    import random
    import threading
    import urllib.request

    url, wf = setup["url"], setup["wf"]
    store = SQLiteForgetStore(str(setup["db"]), num_classes=10)
    rng = random.Random(0)
    tenants = []
    for i in range(4):
        tenant, key = store.create_tenant(f"load-{i}")
        held = rng.sample(range(10), i)  # 0, 1, 2 and 3 forgotten classes
        if held:
            store.add_classes(tenant.id, held)
        tenants.append((key, held))
    store.close()
    before = _batch_counts(urllib.request.urlopen(url + "/metrics", timeout=10).read().decode())
    jobs = []
    for n in range(32 * 4):
        key, held = tenants[n % 4]
        asked = rng.sample(range(10), rng.randint(0, 3))
        x01 = torch.rand(rng.randint(1, 2), 8, 8, generator=torch.Generator().manual_seed(n))
        jobs.append((key, sorted(set(held) | set(asked)), asked, x01))
    answers = [None] * len(jobs)

    def client(first: int) -> None:
        for n in range(first, len(jobs), 32):
            key, _, asked, x01 = jobs[n]
            answers[n] = request(url + "/v1/predict", {"images": [{"array": x.tolist()} for x in x01],
                                                       "forget": asked, "top_k": 10}, key=key)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    worst, shared = 0.0, 0
    for (key, applied, asked, x01), (status, body, _) in zip(jobs, answers):
        assert status == 200, body
        assert body["forget"]["applied"] == applied and body["forget"]["request"] == sorted(asked)
        shared += body["batch"]["requests"] > 1
        for i, x in enumerate(x01):
            want = expected(wf, normalised(x), applied)
            got = probs_of(body, i)
            assert max(got, key=got.get) == int(want.argmax())
            worst = max(worst, max(abs(got[c] - float(want[c])) for c in range(10)))
    assert worst < 1e-5, worst
    after = _batch_counts(urllib.request.urlopen(url + "/metrics", timeout=10).read().decode())
    single = after["1.0"] - before.get("1.0", 0.0)
    total = after["+Inf"] - before.get("+Inf", 0.0)
    assert total > single and shared > 0  # some forwards stacked several requests (the histogram shows it)
    images = _batch_counts(urllib.request.urlopen(url + "/metrics", timeout=10).read().decode(), "wfkern_batch_size")
    assert images["+Inf"] - images["2.0"] > 0  # forwards of more images than one request carries
