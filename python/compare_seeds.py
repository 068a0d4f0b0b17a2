"""The digits comparison over several seeds: WF-Net and the eight single-class baselines, mean ± std.

For each seed S (the data split stays fixed): ``wfkern train --seed S``, ``wfkern unlearn --seed S``, every
baseline with ``--seed S`` on the chosen classes, ``wfkern evaluate --seed S`` of the original, WF-Net and each
baseline on those classes (the depth metrics included: linear probe, retain fine-tuning recovery, MIA-efficacy),
and one ``wfkern report`` per seed. Then ``summary.json`` (every seed's summaries, mean / std / n per method and
metric, and the manifest: versions, seeds, settings, data hashes, the commands) and ``summary.md`` (the table).
Every step whose output exists is skipped, so an interrupted run continues.

    python python/compare_seeds.py --out runs/compare --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from wfkern._atomic import atomic_write_text
from wfkern.baselines import BASELINES
from wfkern.metrics.manifest import versions
from wfkern.metrics.store import atomic_write_json
from wfkern.reports import load_results
from wfkern.reports.spread import aggregate, manifest_lines, spread_table
from wfkern.reports.tables import to_markdown

METRICS = "acc,zrf,mia,rt,probe,retain_ft,mia_eff"


def _wfkern() -> str:
    here = Path(sys.executable).with_name("wfkern")
    return str(here) if here.exists() else "wfkern"


def _run(argv: list[str], log: list, done: Path) -> None:
    """Run one wfkern command unless ``done`` exists; record it."""
    log.append(" ".join(shlex.quote(a) for a in argv))
    if done.exists():
        return
    t0 = time.perf_counter()
    print(f"$ {log[-1]}", flush=True)
    subprocess.run(argv, check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def run_seed(d: Path, seed: int, classes: str, methods: list[str], threads: int, log: list,
             train_args: list[str]) -> dict:
    """Every step of one seed in ``d``; returns {method: results}."""
    wk, common = _wfkern(), ["--no-progress", "--threads", str(threads)]
    ck = str(d / "model.safetensors")
    d.mkdir(parents=True, exist_ok=True)
    _run([wk, "train", "--out", ck, "--seed", str(seed), *train_args, *common], log, d / "model.safetensors")
    _run([wk, "unlearn", "--checkpoint", ck, "--out-dir", str(d / "wf"), "--seed", str(seed), *common], log,
         d / "wf" / "gates.safetensors")
    ev = [wk, "evaluate", "--checkpoint", ck, "--classes", classes, "--seed", str(seed), "--metrics", METRICS, *common]
    _run([*ev, "--original", "--out", str(d / "eval_original")], log, d / "eval_original" / "results.json")
    _run([*ev, "--gates", str(d / "wf" / "gates.safetensors"), "--out", str(d / "eval_wfnet")], log,
         d / "eval_wfnet" / "results.json")
    for m in methods:
        _run([wk, "baseline", "--method", m, "--checkpoint", ck, "--out-dir", str(d / f"b_{m}"), "--classes", classes,
              "--seed", str(seed), *common], log, d / f"b_{m}" / "cost.json")
        _run([*ev, "--baseline-dir", str(d / f"b_{m}"), "--out", str(d / f"eval_{m}")], log,
             d / f"eval_{m}" / "results.json")
    names = ["original", "wfnet", *methods]
    results = {}
    for name in names:
        res = load_results(d / f"eval_{name}")
        results[res.get("method") or name] = res
    _run([wk, "report", *[str(d / f"eval_{n}") for n in names], "--out", str(d / "report"), "--run-dir",
          str(d / "wf")], log, d / "report" / "report.md")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0 .. N-1 (default 3)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--classes", default="0,3,8", help="the forgotten classes compared (default 0,3,8)")
    p.add_argument("--methods", default=",".join(BASELINES), help="baselines to run (default all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-args", default="", help="more `wfkern train` options, e.g. \"--epochs 1\" (a smoke run)")
    args = p.parse_args()
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    out = Path(args.out)
    methods = [m for m in args.methods.split(",") if m]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    log: list[str] = []
    t0 = time.perf_counter()
    runs = [run_seed(out / f"seed_{s}", s, args.classes, methods, args.threads, log, shlex.split(args.train_args))
            for s in seeds]
    agg = aggregate(runs)
    table = to_markdown(spread_table(agg, runs[0]))
    summary = {"seeds": seeds, "classes": args.classes, "methods": list(agg), "metrics": METRICS,
               "aggregate": agg, "per_seed": [{m: r["summary"] for m, r in run.items()} for run in runs],
               "manifest": {"versions": versions(), "seeds": seeds, "threads": args.threads,
                            "per_method": {m: runs[0][m].get("manifest") for m in runs[0]}, "commands": log},
               "seconds": time.perf_counter() - t0}
    atomic_write_json(out / "summary.json", summary)
    lines = [f"# Digits comparison, {len(seeds)} seeds ({', '.join(map(str, seeds))}), classes {args.classes}", "",
             "Mean ± sample standard deviation over the seeds; accuracies, ZRF and MIA in %, RT in epochs.", "",
             table, "", "## Manifest (seed {})".format(seeds[0]), ""] + [f"- {ln}" for ln in manifest_lines(runs[0])]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print(table)
    print(f"-> {out / 'summary.json'}, {out / 'summary.md'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
