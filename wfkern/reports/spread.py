"""Several seeds of one comparison: mean ± standard deviation per method and metric, as a table, and the manifest
lines (versions, seeds, settings, data hashes) a results file carries."""

from __future__ import annotations

import math
from typing import Optional, Sequence

from .tables import Table, gaps, method_label, ordered

__all__ = ["mean_std", "fmt_mean_std", "aggregate", "spread_table", "SPREAD_METRICS", "manifest_lines"]

# (summary key, column, scale): fractions shown x100; RT in epochs; "rft_head_acc_f": retain fine-tuning of the head
# alone (a second evaluation, ``compare_seeds.py --head-ft``); "gap": the mean gap to retraining of that seed
# (``tables.gaps``, already in percentage points).
SPREAD_METRICS = (("acc_r", "Acc_r", 100.0), ("acc_f", "Acc_f", 100.0), ("zrf", "ZRF", 100.0), ("rt", "RT", 1.0),
                  ("mia", "MIA", 100.0), ("mia_eff", "MIA-eff.", 100.0), ("probe_acc_f", "Probe Acc_f", 100.0),
                  ("rft_acc_f", "Retain-FT Acc_f", 100.0), ("rft_head_acc_f", "Retain-FT head Acc_f", 100.0),
                  ("gap", "Gap to retrain", 1.0))


def mean_std(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
    """(mean, sample standard deviation (n − 1; 0 for one value), n) of the values that are numbers (None and NaN
    skipped); (None, None, 0) when none is."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd, len(vals)


def fmt_mean_std(mean: Optional[float], std: Optional[float], scale: float = 100.0, digits: int = 1) -> str:
    """``"97.3 ± 0.4"`` (values × ``scale``); "–" when missing."""
    if mean is None:
        return "–"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def aggregate(runs: Sequence[dict]) -> dict:
    """Per method and summary key, the mean, standard deviation and count over runs.

    Args:
        runs: one ``{method: wfkern.evaluate result}`` per seed (a method may be missing from a run), every method
            of a run evaluated on the same classes. The gap to retraining is each seed's mean gap
            (``tables.gaps``: |method − retrained| over Acc_r, Acc_f, ZRF and MIA, in points) when the run holds a
            retrained model.
    Returns:
        ``{method: {key: {"mean", "std", "n"}}}`` for every key of ``SPREAD_METRICS`` (and ``rt_capped``).
    """
    methods = list(dict.fromkeys(m for run in runs for m in run))
    run_gaps = [gaps(run) for run in runs]
    out = {}
    for m in methods:
        rows = [{**run[m]["summary"], "gap": (g.get(m) or {}).get("mean")}
                for run, g in zip(runs, run_gaps) if m in run]
        out[m] = {}
        for key in [k for k, _, _ in SPREAD_METRICS] + ["rt_capped"]:
            mean, std, n = mean_std([r.get(key) for r in rows])
            out[m][key] = {"mean": mean, "std": std, "n": n}
    return out


def spread_table(agg: dict, results_by_method: Optional[dict] = None) -> Table:
    """One row per method (the report's order), each metric as "mean ± std" over the seeds; columns that no
    method has are left out."""
    cols = [(k, name, scale) for k, name, scale in SPREAD_METRICS if any(agg[m][k]["n"] for m in agg)]
    headers = ["Method", "Seeds"] + [name for _, name, _ in cols]
    rows = []
    for m in ordered(agg):
        n = max(agg[m][k]["n"] for k, _, _ in cols) if cols else 0
        label = method_label(m, (results_by_method or {}).get(m))
        cells = [fmt_mean_std(agg[m][k]["mean"], agg[m][k]["std"], scale) for k, _, scale in cols]
        rows.append([label, str(n)] + cells)
    return headers, rows


def _manifest_parts(man: dict) -> tuple[str, str, str]:
    """(versions, seeds, data splits) of one manifest, as text."""
    ver = ", ".join(f"{k} {v}" for k, v in (man.get("versions") or {}).items())
    seeds = ", ".join(f"{k} {v}" for k, v in (man.get("seeds") or {}).items())
    data = "; ".join(f"{k}: {d.get('n')} samples, sha256 {d.get('sha256')} ({d.get('covers')})"
                     for k, d in (man.get("data") or {}).items() if isinstance(d, dict))
    return ver, seeds, data


def manifest_lines(results: dict) -> list[str]:
    """One line per method from the ``manifest`` of its results: versions, seeds, the data splits' hashes; and a
    second line for the untraining run behind it (``manifest.unlearn``, written by ``wfkern unlearn``): its seed,
    settings and data."""
    lines = []
    for m in ordered(results):
        man = results[m].get("manifest")
        if not isinstance(man, dict):
            lines.append(f"{m}: no manifest (results written before manifests were recorded)")
            continue
        ver, seeds, data = _manifest_parts(man)
        metrics = ",".join((man.get("settings") or {}).get("metrics") or []) or "default"
        lines.append(f"{m}: {ver} | seeds: {seeds} | metrics: {metrics} | data: {data}")
        run = man.get("unlearn")
        if isinstance(run, dict):
            ver, seeds, data = _manifest_parts(run)
            settings = ", ".join(f"{k}={v}" for k, v in sorted((run.get("settings") or {}).items()))
            lines.append(f"{m} untraining run: {ver} | seeds: {seeds} | data: {data} | settings: {settings}")
    return lines
