"""The page at /, in a real browser (Debian's Chromium driven by Playwright): upload an image, tick classes, read
both rendered answers and compare them with the model."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

pytest.importorskip("litserve")

from _serve_helpers import Server, make_model, oracle  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the Makefile's test target installs it)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install -y chromium; `make test` does it as root)")
    return sync_playwright


def test_the_page_shows_both_answers_of_an_uploaded_image(tmp_path):
    sync_playwright = _browser_or_skip()
    from PIL import Image

    ckpt, filters = make_model(tmp_path)
    pixels = torch.randint(0, 256, (8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    png = tmp_path / "digit.png"
    Image.fromarray(pixels.numpy()).save(png)
    wf = oracle(ckpt, filters)
    x = ((pixels.float() / 255 - 0.3053) / 0.3760).view(1, 1, 8, 8)
    with torch.no_grad():
        plain = torch.softmax(wf(x), 1)[0]
        forgetting = torch.softmax(wf(x, forget=torch.tensor([[3, 5]])), 1)[0]

    server = Server(ckpt, filters, log=tmp_path / "server.log")
    try:
        server.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.goto(server.url + "/")
                page.wait_for_selector("#forget-5")
                page.set_input_files("#image", str(png))
                page.check("#forget-3")
                page.check("#forget-5")
                page.click("#predict")
                page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=30000)
                shown = {tid: [[c.inner_text() for c in row.query_selector_all("td")]
                               for row in page.query_selector_all(f"#{tid} tr.pred")]
                         for tid in ("original", "forgetting")}
                applied = page.inner_text("#forgetting-forget")
                assert page.inner_text("#original-forget") == "forget set applied: none"
            finally:
                browser.close()
    finally:
        server.stop()
    assert applied == "forget set applied: 3, 5"
    for tid, probs in (("original", plain), ("forgetting", forgetting)):
        top = probs.topk(5)
        assert [r[0] for r in shown[tid]] == [str(int(c)) for c in top.indices], (tid, shown[tid])
        assert [r[1] for r in shown[tid]] == [f"{float(p):.4f}" for p in top.values]
    assert shown["original"] != shown["forgetting"]
