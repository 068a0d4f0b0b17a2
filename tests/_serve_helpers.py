"""Helpers of the `wfkern serve` tests: a tiny random-init checkpoint with hand-set gates, a server subprocess on a
free loopback port (always stopped), and a small JSON client."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = [8, 16, 16]


def make_model(folder: Path, num_classes: int = 10, seed: int = 0) -> tuple[Path, Path]:
    """A random-init small CNN on the digits (1 x 8 x 8) and filters with gate logits set by hand."""
    import wfkern
    from wfkern.models import create_model

    torch.manual_seed(seed)
    ckpt, filters = folder / "model.safetensors", folder / "gates.safetensors"
    model = create_model("small_cnn", num_classes, 1, 8, widths=WIDTHS)
    with torch.no_grad():  # sharper logits than a random init's, so that every forget set shows
        model.head.weight.mul_(40)
    wfkern.save_model(model, str(ckpt), arch="small_cnn", image_size=8, dataset="digits", widths=WIDTHS)
    wf = wfkern.patch(wfkern.load_model(str(ckpt)), num_classes=num_classes)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in wf.wf_layers().values():
            layer.alpha_w.copy_(torch.randn(layer.alpha_w.shape, generator=gen) * 3)
    wf.save_gates(str(filters))
    return ckpt, filters


def oracle(ckpt: Path, filters: Path):
    """The WF model the server should equal, loaded as `wfkern evaluate` loads it."""
    import wfkern

    wf = wfkern.patch(wfkern.load_model(str(ckpt)), num_classes=10)
    wfkern.load_gates(wf, str(filters))
    return wf.eval()


def png_b64(pixels: torch.Tensor) -> str:
    """base64 PNG of a (H, W) uint8 tensor (grayscale) or (3, H, W) (RGB)."""
    from PIL import Image

    arr = pixels.numpy()
    img = Image.fromarray(arr if arr.ndim == 2 else arr.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`wfkern serve` in a subprocess on 127.0.0.1; ``stop()`` sends SIGTERM (then SIGKILL) and returns its code."""

    def __init__(self, ckpt, filters, *extra: str, registry=None, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "wfkern.cli.main", "serve", "--checkpoint", str(ckpt), "--port", str(self.port),
               "--threads", "1", *extra]
        if filters is not None:
            cmd += ["--gates", str(filters)]
        cmd += ["--registry", str(registry)] if registry is not None else ["--no-auth"]
        self.log = log
        out = open(log, "w") if log is not None else subprocess.DEVNULL
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> "Server":
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_text()}")
            try:
                if get(self.url + "/healthz", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout} s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text()[-3000:] if self.log is not None and self.log.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:  # the worker and manager processes of the group, should any outlive the server
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.returncode


def request(url: str, body=None, *, key: str | None = None, method: str | None = None, raw: bytes | None = None,
            timeout: float = 30, headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON answer, headers with lower-case names) of one HTTP request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return r.status, _parse(text), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, _parse(e.read()), {k.lower(): v for k, v in e.headers.items()}


def _parse(text: bytes):
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text.decode(errors="replace")}


def get(url: str, **kw):
    return request(url, **kw)


def probs_of(answer: dict, image: int = 0) -> dict[int, float]:
    """{class: probability} of one image's top-k."""
    return {e["class"]: e["probability"] for e in answer["predictions"][image]["top_k"]}
