"""Load on `wfkern serve` (not a test): Locust, headless, bounded, on loopback, against three servers of one model:

  (a) plain: the original model behind the same server (no forgetting);
  (b) wf: the WF model, each request with its own forget set, one forward per batching window;
  (c) baked: one ``wfkern.bake`` model per forget set, each request routed to its set's model.

For 1, 10 and all Nc distinct forget sets (single classes drawn per request): requests/s, p50 / p99 latency,
peak memory of the server's processes and mean images per forward. Each server is warmed up (every baked model
built) before it is timed; (a), (b) and (c) run in interleaved rounds (the machine's load drifts), and each
shows its median round. Results: a JSON file and a Markdown table.

    python bench/serve_load.py     # small CNN, 20 classes, 32 px RGB, 16 users, 3 rounds of 15 s a server
    python bench/serve_load.py --seconds 5 --rounds 1 --sets 10   # a quick look
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
    """A random-init model (save_model), filters with random gates (save_gates), 32 random RGB PNGs."""
    import wfkern
    from PIL import Image

    from wfkern.models import create_model

    torch.manual_seed(seed)
    ckpt, filters, images = folder / "model.safetensors", folder / "gates.safetensors", folder / "images.json"
    wfkern.save_model(create_model(model, classes, 3, size), str(ckpt), arch=model, image_size=size)
    wf = wfkern.patch(wfkern.load_model(str(ckpt)), num_classes=classes)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in wf.wf_layers().values():
            layer.alpha_w.copy_(torch.randn(layer.alpha_w.shape, generator=gen) * 3)
    wf.save_gates(str(filters))
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


class LiveServer:
    """One `wfkern serve` subprocess (its own session), warmed up: every forget set answered once."""

    def __init__(self, label: str, mode: str, sets: int, files, args) -> None:
        ckpt, filters, images = files
        self.label, self.mode, self.sets, self.images = label, mode, sets, images
        self.url = f"http://127.0.0.1:{free_port()}"
        cmd = [sys.executable, "-m", "wfkern.cli.main", "serve", "--checkpoint", str(ckpt), "--port",
               self.url.rsplit(":", 1)[1], "--no-auth", "--mode", mode, "--threads", str(args.threads),
               "--max-batch-size", str(args.max_batch_size), "--batch-timeout", str(args.batch_timeout)]
        if mode != "plain":
            cmd += ["--gates", str(filters)]
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        end = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(self.url + "/healthz", timeout=2).status == 200:
                    break
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{label}: the server did not start")
                time.sleep(0.25)
        pngs = json.loads(Path(images).read_text())
        for c in range(max(sets, 1)):  # builds every baked model before anything is timed
            post(self.url, {"images": [pngs[c % len(pngs)]], **({"forget": [c]} if sets else {})})

    def measure(self, args) -> dict:
        """One Locust run; requests/s, p50 / p99 (ms) and this run's mean images per forward."""
        before = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "WFK_SETS": str(self.sets), "WFK_IMAGES": str(self.images), "WFK_SEED": "0"}
            subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u",
                            str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s", "--host", self.url,
                            "--csv", f"{tmp}/run", "--only-summary", "--loglevel", "ERROR"],
                           env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=args.seconds + 120)
            with open(f"{tmp}/run_stats.csv") as f:
                row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
        after = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        images, forwards = (metric(after, f"wfkern_batch_size_{k}") - metric(before, f"wfkern_batch_size_{k}")
                            for k in ("sum", "count"))
        return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]), "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]),
                "mean_batch": images / forwards if forwards else float("nan")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def metric(text: str, name: str) -> float:
    return next((float(ln.split()[1]) for ln in text.splitlines() if ln.startswith(name + " ")), 0.0)


def summarise(server: LiveServer, runs: list[dict]) -> dict:
    """The median run (by requests/s) of a server's rounds, with every round's requests/s."""
    mid = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    out = {"label": server.label, "mode": server.mode, "sets": server.sets, **mid,
           "rps_rounds": [round(r["rps"], 1) for r in runs], "peak_mib": peak_mib(server.proc.pid)}
    print(json.dumps(out), flush=True)
    return out


def compare(plain: LiveServer, sets: int, files, args) -> list[dict]:
    """(b) and (c) with ``sets`` distinct forget sets, interleaved with (a) round by round."""
    servers = [LiveServer("(b) WF, per-request sets", "wf", sets, files, args),
               LiveServer("(c) baked per set", "baked", sets, files, args)]
    try:
        runs = {id(s): [] for s in [plain] + servers}
        for _ in range(args.rounds):
            for server in [plain] + servers:
                runs[id(server)].append(server.measure(args))
        plain_runs = runs[id(plain)]
        return [summarise(plain, plain_runs)] + [summarise(s, runs[id(s)]) for s in servers]
    finally:
        for server in servers:
            server.stop()


def table(results: list[dict]) -> str:
    """Markdown: per set count, (a) of the same rounds, (b) and (c); ratios of the medians."""
    lines = ["| distinct forget sets | server | requests/s (median; rounds) | vs (a) | p50 ms | p99 ms | "
             "peak memory MiB | mean batch |", "|---|---|---|---|---|---|---|---|"]
    for i in range(0, len(results), 3):
        group = results[i:i + 3]
        base, wf = group[0]["rps"], group[1]["rps"]
        for r in group:
            rel = f"{r['rps'] / base:.2f}x" + (f" ((b)/(c) {wf / r['rps']:.2f}x)" if r["mode"] == "baked" else "")
            rounds = ", ".join(f"{v:.0f}" for v in r["rps_rounds"])
            lines.append(f"| {group[1]['sets']} | {r['label']} | {r['rps']:.1f} ({rounds}) | {rel} | "
                         f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['peak_mib']:.0f} | {r['mean_batch']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--users", type=int, default=16, help="concurrent Locust users")
    p.add_argument("--seconds", type=int, default=15, help="timed seconds per run")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the model worker")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-timeout", type=float, default=0.005)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of (a), (b), (c); the median is shown")
    p.add_argument("--sets", default=None, help="comma list of distinct-set counts to run (default: 1, 10, Nc)")
    p.add_argument("--out", default=None, help="JSON results (default: bench/results/serve-<date>.json)")
    args = p.parse_args()
    n = args.classes
    counts = [k for k in (1, 10, n) if not args.sets or str(k) in args.sets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.model, n, args.image_size)
        plain = LiveServer("(a) plain", "plain", 0, files, args)
        try:
            results = [r for k in counts for r in compare(plain, k, files, args)]
        finally:
            plain.stop()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(args.out or ROOT / "bench" / "results" / f"serve-{stamp[:10]}.json")
    out.write_text(json.dumps({"when": stamp, "args": vars(args), "results": results}, indent=1))
    print(f"\n{args.model}, {n} classes, {args.image_size} px RGB, {args.users} users, {args.seconds} s a run, "
          f"{stamp} -> {out}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
