"""The digits comparison over several seeds: WF-Net and the eight single-class baselines, mean ± std.

For each seed S (the data split stays fixed): ``wfkern train --seed S``, ``wfkern unlearn --seed S``, every
baseline with ``--seed S`` on the chosen classes, ``wfkern evaluate --seed S`` of the original, WF-Net and each
baseline on those classes (the depth metrics included: linear probe, retain fine-tuning recovery, MIA-efficacy),
and one ``wfkern report`` per seed. Then ``summary.json`` (every seed's summaries, mean / std / n per method and
metric, and the manifest: versions, seeds, settings, data hashes, the commands) and ``summary.md`` (the table).
Every step whose output exists is skipped, so an interrupted run continues.

    python python/compare_seeds.py --out runs/compare --seeds 3

A reduced run on a larger dataset: ``--dataset fashion_mnist --image-size 14 --subset train=0.04,val=0.1,test=0.1``
keeps a seeded, class-stratified fraction of each split (``--subset-seed``, the same for every seed). Every command
then runs through this script (``compare_seeds.py wfkern SPEC ARGS...``), which registers the subset as the dataset
``<dataset>_subset`` first: the checkpoint names it, so no later command can read the full splits by mistake, and
every manifest hashes the subset actually read.

    python python/compare_seeds.py --out runs/fashion --dataset fashion_mnist --image-size 14 \
        --subset train=0.04,val=0.1,test=0.1 --classes 0,6 --train-args "--model-arg widths=[32,64,64]"
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
SUBSET_SUFFIX = "_subset"


def parse_subset(text: str) -> dict[str, float]:
    """``"train=0.04,test=0.1"`` -> ``{"train": 0.04, "test": 0.1}``: the fraction of each split kept (0 < f <= 1)."""
    out = {}
    for item in filter(None, text.split(",")):
        split, sep, value = item.partition("=")
        try:
            frac = float(value)
        except ValueError:
            frac = float("nan")
        if not sep or split not in ("train", "val", "test") or not 0 < frac <= 1:
            raise ValueError(f"compare_seeds: --subset must be SPLIT=FRACTION items (split train, val or test, "
                             f"0 < fraction <= 1), got {item!r}")
        out[split] = frac
    return out


def register_subset(dataset: str, fractions: dict[str, float], seed: int) -> str:
    """Register ``<dataset>_subset``: each split of ``dataset`` cut to a seeded, class-stratified fraction.

    The subset's ``info.name`` is the registered name (a checkpoint trained on it names it). Returns that name.
    """
    import dataclasses

    from wfkern.data import dataset_targets, get_dataset, register_dataset, subset_of
    from wfkern.data.splits import stratified_split

    name = dataset + SUBSET_SUFFIX

    def load(split, split_seed, root, download, image_size):
        full = get_dataset(dataset, root=root, split=split, seed=split_seed, download=download, image_size=image_size)
        frac = fractions.get(split, 1.0)
        part = full if frac >= 1 else subset_of(full, stratified_split(dataset_targets(full), (frac,), seed)[0])
        part.info = dataclasses.replace(full.info, name=name)
        return part

    register_dataset(name, load)
    return name


def _wfkern(subset: str | None = None) -> list[str]:
    """The command that runs ``wfkern``: the installed script, or this script in its subset mode."""
    if subset is not None:
        return [sys.executable, str(Path(__file__).resolve()), "wfkern", subset]
    here = Path(sys.executable).with_name("wfkern")
    return [str(here) if here.exists() else "wfkern"]


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
             train_args: list[str], wk: list[str] | None = None, head_ft: bool = False) -> dict:
    """Every step of one seed in ``d`` (``wk``: the wfkern command, default the installed one; ``head_ft``: also
    retain fine-tuning of the head alone, the features frozen, as ``rft_head_acc_f``); returns {method: results}."""
    wk, common = wk or _wfkern(), ["--no-progress", "--threads", str(threads)]
    ck = str(d / "model.safetensors")
    d.mkdir(parents=True, exist_ok=True)
    _run([*wk, "train", "--out", ck, "--seed", str(seed), *train_args, *common], log, d / "model.safetensors")
    _run([*wk, "unlearn", "--checkpoint", ck, "--out-dir", str(d / "wf"), "--seed", str(seed), *common], log,
         d / "wf" / "gates.safetensors")
    ev = [*wk, "evaluate", "--checkpoint", ck, "--classes", classes, "--seed", str(seed), *common]
    what = {"original": ["--original"], "wfnet": ["--gates", str(d / "wf" / "gates.safetensors")]}
    for m in ["original", "wfnet", *methods]:
        if m in methods:
            _run([*wk, "baseline", "--method", m, "--checkpoint", ck, "--out-dir", str(d / f"b_{m}"), "--classes",
                  classes, "--seed", str(seed), *common], log, d / f"b_{m}" / "cost.json")
            what[m] = ["--baseline-dir", str(d / f"b_{m}")]
        _run([*ev, "--metrics", METRICS, *what[m], "--out", str(d / f"eval_{m}")], log, d / f"eval_{m}" / "results.json")
        if head_ft:
            _run([*ev, "--metrics", "acc,retain_ft", "--rft-part", "head", *what[m], "--out", str(d / f"headft_{m}")],
                 log, d / f"headft_{m}" / "results.json")
    results = {}
    for name in what:
        res = load_results(d / f"eval_{name}")
        if head_ft:
            res["summary"]["rft_head_acc_f"] = load_results(d / f"headft_{name}")["summary"]["rft_acc_f"]
        results[res.get("method") or name] = res
    _run([*wk, "report", *[str(d / f"eval_{n}") for n in what], "--out", str(d / "report"), "--run-dir",
          str(d / "wf")], log, d / "report" / "report.md")
    return results


def _subset_mode(argv: list[str]) -> None:
    """``compare_seeds.py wfkern SPEC ARGS...``: ``wfkern ARGS...`` with the subset of SPEC registered."""
    from wfkern.cli.main import main as wfkern_main

    spec = json.loads(argv[0])
    register_subset(spec["dataset"], spec["fractions"], spec["seed"])
    sys.exit(wfkern_main(argv[1:]))


def main() -> None:
    if sys.argv[1:2] == ["wfkern"]:
        return _subset_mode(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0 .. N-1 (default 3)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--classes", default="0,3,8", help="the forgotten classes compared (default 0,3,8)")
    p.add_argument("--methods", default=",".join(BASELINES), help="baselines to run (default all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-args", default="", help="more `wfkern train` options, e.g. \"--epochs 1\" (a smoke run)")
    p.add_argument("--dataset", default=None, help="the dataset trained on (default: wfkern train's, the digits)")
    p.add_argument("--image-size", type=int, default=None, help="image side for training (later commands: the "
                   "checkpoint's)")
    p.add_argument("--subset", default=None, metavar="SPLIT=FRAC,...",
                   help="keep a seeded, class-stratified fraction of each named split, e.g. train=0.04,test=0.1 "
                        "(needs --dataset; default: the full splits)")
    p.add_argument("--subset-seed", type=int, default=0, help="the seed of --subset's choice (default 0)")
    p.add_argument("--head-ft", action="store_true",
                   help="also evaluate retain fine-tuning of the head alone (--rft-part head, the features frozen) "
                        "for every method: the summary's 'Retain-FT head Acc_f' column")
    args = p.parse_args()
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    wk, train_args, subset = None, shlex.split(args.train_args), None
    if args.subset is not None:
        if args.dataset is None:
            p.error("--subset needs --dataset")
        try:
            subset = {"dataset": args.dataset, "fractions": parse_subset(args.subset), "seed": args.subset_seed}
        except ValueError as e:
            p.error(str(e))
        wk = _wfkern(json.dumps(subset, sort_keys=True))
    if args.dataset is not None:
        train_args += ["--dataset", args.dataset + (SUBSET_SUFFIX if subset else "")]
    if args.image_size is not None:
        train_args += ["--image-size", str(args.image_size)]
    out = Path(args.out)
    methods = [m for m in args.methods.split(",") if m]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    log: list[str] = []
    t0 = time.perf_counter()
    runs = [run_seed(out / f"seed_{s}", s, args.classes, methods, args.threads, log, train_args, wk, args.head_ft)
            for s in seeds]
    agg = aggregate(runs)
    table = to_markdown(spread_table(agg, runs[0]))
    summary = {"seeds": seeds, "classes": args.classes, "methods": list(agg), "metrics": METRICS,
               "aggregate": agg, "per_seed": [{m: r["summary"] for m, r in run.items()} for run in runs],
               "manifest": {"versions": versions(), "seeds": seeds, "threads": args.threads,
                            "subset": subset, "per_method": {m: runs[0][m].get("manifest") for m in runs[0]},
                            "commands": log},
               "seconds": time.perf_counter() - t0}
    atomic_write_json(out / "summary.json", summary)
    data = args.dataset or "Digits"
    if subset:
        data += f" (reduced: {args.subset} of the splits, subset seed {args.subset_seed})"
    lines = [f"# {data} comparison, {len(seeds)} seeds ({', '.join(map(str, seeds))}), classes {args.classes}", "",
             "Mean ± sample standard deviation over the seeds; accuracies, ZRF and MIA in %, RT in epochs, the gap to "
             "retraining (the mean of |method − retrained| over Acc_r, Acc_f, ZRF and MIA) in points.", "",
             table, "", "## Manifest (seed {})".format(seeds[0]), ""] + [f"- {ln}" for ln in manifest_lines(runs[0])]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print(table)
    print(f"-> {out / 'summary.json'}, {out / 'summary.md'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
