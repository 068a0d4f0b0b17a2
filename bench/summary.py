"""Print one table of ratios from a pytest-benchmark JSON file.

    python bench/summary.py .benchmarks/cpu.json [--markdown]

Each row's ratio is its median over its same-mode baseline from the same run: "copy" for the
epilogue groups, "plain" (or "plain_compiled") for model forwards, "floor" for untraining steps.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

BASELINES = ("copy", "plain", "floor")


def baseline_of(impl: str, impls: set) -> str:
    if impl.endswith("_compiled") and "plain_compiled" in impls:
        return "plain_compiled"
    return next((b for b in BASELINES if b in impls), impl)


def rows(data: dict) -> list:
    groups = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        groups[bench["group"]][info.get("impl", bench["name"])] = (bench["stats"]["median"], info)
    out = []
    for group in sorted(groups):
        impls = groups[group]
        for impl, (median, info) in impls.items():
            base = baseline_of(impl, set(impls))
            ratio = median / impls[base][0] if base in impls else float("nan")
            gbps = info["bytes"] / median / 1e9 if "bytes" in info else None
            images = info["batch"] / median if "model" in info and info.get("batch") else None
            out.append(dict(group=group, impl=impl, baseline=base, median_ms=median * 1e3, ratio=ratio, gbps=gbps,
                            images_per_s=images,
                            peak_extra_mb=info.get("peak_extra_mb"), batch=info.get("batch"), dtype=info.get("dtype")))
    return out


def render(table: list, markdown: bool) -> str:
    header = ["group", "impl", "vs", "median ms", "ratio", "GB/s", "img/s", "peak extra MB", "batch", "dtype"]
    lines = []
    for r in table:
        lines.append([r["group"], r["impl"], r["baseline"], f"{r['median_ms']:.3f}", f"{r['ratio']:.3f}",
                      "" if r["gbps"] is None else f"{r['gbps']:.1f}",
                      "" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}",
                      "" if r["peak_extra_mb"] is None else f"{r['peak_extra_mb']:.0f}",
                      str(r["batch"] or ""), (r["dtype"] or "").replace("torch.", "")])
    if markdown:
        sep = ["---"] * len(header)
        return "\n".join("| " + " | ".join(row) + " |" for row in [header, sep] + lines)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header] + lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    try:
        with open(args.json_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        print(f"bench/summary.py: cannot read {args.json_file}: {err}", file=sys.stderr)
        return 1
    machine = data.get("machine_info", {})
    print(f"# {machine.get('gpu') or machine.get('cpu', {}).get('brand_raw', 'cpu')} | torch {machine.get('torch')} "
          f"| wfkern backend {machine.get('wfkern_backend')} | {data.get('datetime', '')}")
    print(render(rows(data), args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
