"""Load on `wfkern serve` (not a test): Locust, headless, bounded, on loopback, against three servers of one model:

  (a) plain: the original model behind the same server (no forgetting);
  (b) wf: the WF model, each request with its own forget set, one forward per batching window;
  (c) baked: one ``wfkern.bake`` model per forget set, each request routed to its set's model.

For 1, 10 and all Nc distinct forget sets (single classes drawn per request): requests/s, p50 / p99 latency,
peak memory of the server's processes and mean images per forward. Each server is warmed up (every baked model
built) before it is timed. Results: a JSON file and a Markdown table.

    python bench/serve_load.py                       # small CNN, 20 classes, 32 px RGB, 16 users, 20 s a run
    python bench/serve_load.py --seconds 5 --only a,b1   # a quick look
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).with_name("serve_locustfile.py")


def make_files(folder: Path, model: str, classes: int, size: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """A random-init model (save_model), filters with random gates (save_filters), 32 random RGB PNGs."""
    import wfkern
    from PIL import Image

    from wfkern.models import create_model

    torch.manual_seed(seed)
    ckpt, filters, images = folder / "model.safetensors", folder / "filters.safetensors", folder / "images.json"
    wfkern.save_model(create_model(model, classes, 3, size), str(ckpt), arch=model, image_size=size)
    wf = wfkern.patch(wfkern.load_model(str(ckpt)), num_classes=classes)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in wf.wf_layers().values():
            layer.alpha_w.copy_(torch.randn(layer.alpha_w.shape, generator=gen) * 3)
    wf.save_filters(str(filters))
    pngs = []
    for _ in range(32):
        buf = io.BytesIO()
        pix = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=gen).numpy()
        Image.fromarray(pix).save(buf, format="PNG")
        pngs.append(base64.b64encode(buf.getvalue()).decode())
    images.write_text(json.dumps(pngs))
    return ckpt, filters, images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url + "/v1/predict", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def peak_mib(pid: int) -> float:
    """Sum of the peak resident sizes (VmHWM) of a process and every process of its session."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != pid:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except (OSError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def metric_mean(text: str, name: str) -> float:
    values = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith(name + "_")}
    count = values.get(name + "_count", 0.0)
    return values.get(name + "_sum", 0.0) / count if count else float("nan")


def run_one(label: str, mode: str, sets: int, files, args) -> dict:
    ckpt, filters, images = files
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "wfkern.cli.main", "serve", "--checkpoint", str(ckpt), "--port", str(port),
           "--no-auth", "--mode", mode, "--threads", str(args.threads), "--max-batch-size", str(args.max_batch_size),
           "--batch-timeout", str(args.batch_timeout)]
    if mode != "plain":
        cmd += ["--filters", str(filters)]
    server = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        end = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(url + "/healthz", timeout=2).status == 200:
                    break
            except OSError:
                if time.monotonic() > end or server.poll() is not None:
                    raise RuntimeError(f"{label}: the server did not start")
                time.sleep(0.25)
        pngs = json.loads(Path(images).read_text())
        for c in range(max(sets, 1)):  # warm-up: every forget set once (builds every baked model)
            post(url, {"images": [pngs[c % len(pngs)]], **({"forget": [c]} if sets else {})})
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "WFK_SETS": str(sets), "WFK_IMAGES": str(images), "WFK_SEED": "0"}
            subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u",
                            str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s", "--host", url,
                            "--csv", f"{tmp}/run", "--only-summary", "--loglevel", "ERROR"],
                           env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=args.seconds + 120)
            with open(f"{tmp}/run_stats.csv") as f:
                row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
        metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        result = {"label": label, "mode": mode, "sets": sets, "requests": int(row["Request Count"]),
                  "failures": int(row["Failure Count"]), "rps": float(row["Requests/s"]),
                  "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]), "peak_mib": peak_mib(server.pid),
                  "mean_batch": metric_mean(metrics, "wfkern_batch_size")}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict]) -> str:
    base = next((r["rps"] for r in results if r["mode"] == "plain"), None)
    lines = ["| server | distinct forget sets | requests/s | vs (a) | p50 ms | p99 ms | peak memory MiB | "
             "mean batch |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        rel = f"{r['rps'] / base:.2f}x" if base else "-"
        lines.append(f"| {r['label']} | {r['sets'] or '-'} | {r['rps']:.1f} | {rel} | {r['p50_ms']:.0f} | "
                     f"{r['p99_ms']:.0f} | {r['peak_mib']:.0f} | {r['mean_batch']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--users", type=int, default=16, help="concurrent Locust users")
    p.add_argument("--seconds", type=int, default=20, help="timed seconds per run")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the model worker")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-timeout", type=float, default=0.005)
    p.add_argument("--only", default=None, help="comma list of runs: a, b1, b10, bN, c1, c10, cN")
    p.add_argument("--out", default=None, help="JSON results (default: bench/results/serve-<date>.json)")
    args = p.parse_args()
    n = args.classes
    runs = [("a", "(a) plain", "plain", 0)]
    for key, sets in (("1", 1), ("10", 10), ("N", n)):
        runs += [(f"b{key}", "(b) WF, per-request sets", "wf", sets), (f"c{key}", "(c) baked per set", "baked", sets)]
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r[0] in keep]
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.model, n, args.image_size)
        results = [run_one(label, mode, sets, files, args) for _, label, mode, sets in runs]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(args.out or ROOT / "bench" / "results" / f"serve-{stamp[:10]}.json")
    out.write_text(json.dumps({"when": stamp, "args": vars(args), "results": results}, indent=1))
    print(f"\n{args.model}, {n} classes, {args.image_size} px RGB, {args.users} users, {args.seconds} s a run, "
          f"{stamp} -> {out}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
