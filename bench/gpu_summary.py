"""Targets, per-stage verdicts and the one-screen summary of bench/gpu_check.sh (standard library only).

    python3 bench/gpu_summary.py summary OUT_DIR [--total-s N]     # print (and write OUT_DIR/summary.md)
    python3 bench/gpu_summary.py classify KIND --rc N --seconds S [--timed-out] [--log FILE] [--junit FILE]

``classify`` prints one line ``status<TAB>detail`` for a finished stage (KIND: smoke, tests, memcheck,
racecheck, bench); gpu_check.sh records it as a ``{"kind": "stage"}`` line in bench.jsonl. Every
benchmark result is a JSON line in the same file (written by bench/gpu_targets.py), so a run that
is cut short still leaves everything measured so far, and ``summary`` can be rerun on it.

Statuses: ``ok``, ``FAIL`` (something is wrong), ``incomplete`` (did not finish: timed out, or a
tool refused to run), ``skipped``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from typing import Dict, Iterable, List, Optional

# The GPU performance targets (docs/performance.md). Each: (record kind, impl, field, op, bound).
# The WF reference rows, the materialised weights and every other ratio are reported without one.
TARGETS = [
    dict(kind="forward", impl="wf", field="ratio", op="<=", bound=1.05,
         label="forward WF kernel / plain (same mode)"),
    dict(kind="untrain", impl="wf", field="ratio", op="<=", bound=1.10, label="untraining step WF / floor"),
    dict(kind="untrain", impl="wf", field="mem_ratio", op="<=", bound=1.10,
         label="untraining peak memory WF / floor"),
    dict(kind="epilogue", impl=None, field="fraction", op=">=", bound=0.85,
         label="epilogue bandwidth / same-size copy"),
]

OUT_FILES = dict(jsonl="bench.jsonl", smoke="smoke.txt", junit="tests_cuda.xml", sanitizer="sanitizer.txt",
                 build="build.log", log="log.txt", summary="summary.md")
STAGE_ORDER = ["device", "build", "backend", "memcheck", "racecheck", "smoke", "tests", "profile", "bench"]


# ---- records -------------------------------------------------------------------------------------

def read_jsonl(path: str) -> List[dict]:
    """Every JSON object line of ``path``; a torn last line (a killed writer) is skipped."""
    records = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except OSError:
        pass
    return records


def verdicts(record: dict) -> List[dict]:
    """The target checks that apply to one benchmark record: [{label, value, op, bound, met}].

    ``met`` is None when the value is missing or not a finite number.
    """
    out = []
    for target in TARGETS:
        if record.get("kind") != target["kind"] or (
                target["impl"] is not None and record.get("impl") != target["impl"]):
            continue
        value = record.get(target["field"])
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            met = None
            value = None
        else:
            met = value <= target["bound"] if target["op"] == "<=" else value >= target["bound"]
        out.append(dict(label=target["label"], field=target["field"], value=value, op=target["op"],
                        bound=target["bound"], met=met))
    return out


def target_text(check: dict) -> str:
    unit = "x" if check["field"] != "fraction" else ""
    bound = f"{check['bound']:.2f}{unit}" if unit else f"{check['bound'] * 100:.0f}%"
    return f"{check['op']} {bound}"


def verdict_word(met: Optional[bool]) -> str:
    return "met" if met else ("MISSED" if met is False else "n/a")


def describe(record: dict) -> str:
    """A short name for a benchmark record."""
    kind = record.get("kind")
    if kind == "forward":
        impl = {"wf": "WF kernel", "wf_ref": "WF reference", "materialized": "materialised weights"}.get(
            record.get("impl"), record.get("impl"))
        return f"fwd {record.get('model')} {record.get('mode', 'eager')}: {impl} / {record.get('vs', 'plain')}"
    if kind == "untrain":
        impl = {"wf": "WF kernel", "wf_ref": "WF reference"}.get(record.get("impl"), record.get("impl"))
        return f"untrain {record.get('model')}: {impl} / {record.get('vs', 'floor')}"
    if kind == "epilogue":
        return f"epilogue {record.get('op')} {record.get('layout')}"
    return str(kind)


def value_text(record: dict, field: str) -> str:
    value = record.get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if field == "fraction":
        gbps = record.get("gbps")
        return f"{value * 100:.0f}% ({gbps:.0f} GB/s)" if isinstance(gbps, (int, float)) else f"{value * 100:.0f}%"
    if field == "mem_ratio":
        peak, base_peak = record.get("peak_mb", float("nan")), record.get("base_peak_mb", float("nan"))
        return f"{value:.3f}x ({peak:.0f} vs {base_peak:.0f} MB)"
    ms, base_ms = record.get("ms"), record.get("base_ms")
    if isinstance(ms, (int, float)) and isinstance(base_ms, (int, float)):
        return f"{value:.3f}x ({ms:.1f} vs {base_ms:.1f} ms)"
    return f"{value:.3f}x"


def bench_lines(records: Iterable[dict]) -> List[List[str]]:
    """[what, value, target, verdict] rows for every benchmark record, targets first-class."""
    rows = []
    for record in records:
        kind = record.get("kind")
        if kind in ("forward", "untrain", "epilogue"):
            checks = verdicts(record)
            if checks:
                for check in checks:
                    what = describe(record) + (" peak memory" if check["field"] == "mem_ratio" else "")
                    rows.append([what, value_text(record, check["field"]), target_text(check),
                                 verdict_word(check["met"])])
            else:
                rows.append([describe(record), value_text(record, "ratio"), "(info)", ""])
        elif kind == "skip":
            rows.append([str(record.get("what")), "skipped", "", str(record.get("reason", ""))[:60]])
        elif kind == "error":
            rows.append([str(record.get("what")), "ERROR", "", str(record.get("error", ""))[:80]])
    return rows


# ---- stage classification ------------------------------------------------------------------------

SMOKE_TOTAL = re.compile(r"^gpu_smoke: (\d+) ok, (\d+) FAIL, (\d+) skipped, (\d+) info(.*)$", re.M)


def _read(path: Optional[str]) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _last_line(text: str, pattern: str = "") -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and (not pattern or pattern in ln)]
    return lines[-1][:160] if lines else ""


def classify_smoke(text: str, rc: int, timed_out: bool) -> tuple:
    m = SMOKE_TOTAL.search(text)
    fails = [ln for ln in text.splitlines() if ln.startswith("FAIL")]
    if m:
        counts = f"{m.group(1)} ok, {m.group(2)} FAIL, {m.group(3)} skipped"
        if int(m.group(2)) > 0 or fails:
            return "FAIL", f"{counts}; first: {fails[0][:120] if fails else '?'}"
        if rc == 0:
            return "ok", counts
        if rc == 3 or timed_out or "no time left" in m.group(5):
            return "incomplete", f"{counts}; stopped early{m.group(5)}"
        return "FAIL", f"{counts}; exit {rc}"
    if fails:
        return "FAIL", f"{len(fails)} FAIL before it stopped; first: {fails[0][:120]}"
    if timed_out:
        return "incomplete", "timed out before the final count"
    if rc == 2:
        return "FAIL", "could not test: " + (_last_line(text) or f"exit {rc}")
    return "FAIL", f"exit {rc} without a final count: {_last_line(text)}"


def junit_counts(path: str) -> Optional[dict]:
    """{tests, failures, errors, skipped, failed: [names]} from a JUnit XML file, None if unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = dict(tests=0, failures=0, errors=0, skipped=0, failed=[])
    for suite in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            counts[key] += int(suite.get(key, 0) or 0)
        for case in suite.iter("testcase"):
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            if bad is not None:
                name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
                msg = (bad.get("message") or "").strip().splitlines()
                counts["failed"].append(f"{name}: {msg[0][:100] if msg else bad.tag}")
    return counts


def classify_tests(junit: Optional[dict], text: str, rc: int, timed_out: bool) -> tuple:
    if junit is None:
        if timed_out:
            return "incomplete", "timed out; no JUnit file"
        return "FAIL", f"no JUnit file (exit {rc}): {_last_line(text)}"
    passed = junit["tests"] - junit["failures"] - junit["errors"] - junit["skipped"]
    counts = (f"{passed} passed, {junit['failures']} failed, {junit['errors']} errors, "
              f"{junit['skipped']} skipped")
    if junit["failures"] or junit["errors"]:
        return "FAIL", f"{counts}; first: {junit['failed'][0] if junit['failed'] else '?'}"
    if timed_out or rc == 2:  # pytest's exit 2: interrupted (the stage's SIGINT)
        return "incomplete", counts + "; interrupted (stage time cap)"
    if rc == 5 or junit["tests"] == 0:
        return "FAIL", "no test was selected"
    if passed == 0:
        return "FAIL", counts + "; every test skipped: no CUDA test ran"
    if rc != 0:
        return "FAIL", f"{counts}; exit {rc}"
    return "ok", counts


SANITIZER_SUMMARY = re.compile(r"=+ ERROR SUMMARY: (\d+) errors?")
RACECHECK_SUMMARY = re.compile(r"=+ RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)")


def classify_sanitizer(text: str, rc: int, timed_out: bool, error_exitcode: int = 86) -> tuple:
    """ok / FAIL (errors found, or the smoke failed under it) / incomplete (refused, crashed, timed out)."""
    summary = SANITIZER_SUMMARY.findall(text)
    errors = int(summary[-1]) if summary else 0
    race = RACECHECK_SUMMARY.findall(text)
    hazards = f"; racecheck: {race[-1][0]} hazards ({race[-1][1]} errors, {race[-1][2]} warnings)" if race else ""
    first = next((ln.strip()[:160] for ln in text.splitlines()
                  if re.match(r"=+ +(Invalid|Race|Program hit|Uninitialized|Error|Warning)", ln.strip())), "")
    if errors > 0 or rc == error_exitcode:
        return "FAIL", f"{errors} errors found{hazards}; first: {first or _last_line(text, '=========')}"
    smoke = SMOKE_TOTAL.search(text)
    if timed_out:
        return "incomplete", "did not complete: timed out" + (f" ({smoke.group(1)} cases ok)" if smoke else "")
    if not (summary or race) or not smoke:  # racecheck prints a RACECHECK SUMMARY instead
        why = _last_line(text, "=========") or _last_line(text) or f"exit {rc}"
        return "incomplete", f"did not complete (sanitizer refused or crashed, exit {rc}): {why}"
    if rc != 0 or int(smoke.group(2)) > 0:
        return "FAIL", f"0 sanitizer errors{hazards}, but the smoke failed under it (exit {rc}, {smoke.group(2)} FAIL)"
    return "ok", f"0 errors{hazards}; smoke {smoke.group(1)} ok"


def classify_bench(records: List[dict], rc: int, timed_out: bool) -> tuple:
    results = [record for record in records if record.get("kind") in ("forward", "untrain", "epilogue")]
    errors = [record for record in records if record.get("kind") == "error"]
    skipped = [record for record in records if record.get("kind") == "skip"]
    checks = [check for record in results for check in verdicts(record)]
    met = sum(1 for check in checks if check["met"])
    counts = f"{len(results)} results, {met}/{len(checks)} targets met, {len(skipped)} skipped"
    if errors:
        return "FAIL", f"{counts}, {len(errors)} errors; first: {errors[0].get('what')}: {str(errors[0].get('error'))[:100]}"
    if timed_out:
        return "incomplete", counts + "; timed out"
    if rc != 0:
        return "FAIL", f"{counts}; exit {rc}"
    if not results:
        return "FAIL", "no result recorded"
    return "ok", counts


# ---- the summary ---------------------------------------------------------------------------------

def overall(stages: Dict[str, dict]) -> tuple:
    """(exit code, word): 2 when no device was found; 1 on any FAIL; 3 when the smoke or the tests did
    not finish; else 0."""
    if stages.get("device", {}).get("status") != "ok":
        return 2, "NOTHING CHECKED (no usable GPU)"
    if any(stage.get("status") == "FAIL" for stage in stages.values()):
        return 1, "FAIL"
    if any(stages.get(k, {}).get("status") in ("incomplete", "skipped") for k in ("smoke", "tests")):
        return 3, "INCOMPLETE"
    if "backend" not in stages or stages["backend"].get("status") != "ok":
        return 3, "INCOMPLETE"
    return 0, "PASS"


def _table(rows: List[List[str]], header: List[str]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return out


def summarize(out_dir: str, total_s: Optional[float] = None, max_fail_lines: int = 8) -> tuple:
    """(markdown text, exit code) for one gpu_check.sh output folder."""
    records = read_jsonl(os.path.join(out_dir, OUT_FILES["jsonl"]))
    stages: Dict[str, dict] = {}
    for record in records:
        if record.get("kind") == "stage":
            stages[str(record.get("stage"))] = record
    meta = next((record for record in reversed(records) if record.get("kind") == "meta"), {})
    code, word = overall(stages)
    lines = [f"# wfkern GPU check: {word}" + (f" ({total_s:.0f} s)" if total_s is not None else ""),
             ""]
    facts = stages.get("device", {}).get("detail") or meta.get("gpu") or "device unknown"
    lines.append(f"{facts} | mode {meta.get('mode', stages.get('device', {}).get('mode', '?'))}")
    lines += [""] + _table(
        [[name, stage.get("status", "?"),
          f"{stage.get('seconds', 0):.0f}s" if isinstance(stage.get("seconds"), (int, float)) else "",
          str(stage.get("detail", ""))[:150]]
         for name, stage in sorted(stages.items(), key=lambda item: (STAGE_ORDER.index(item[0])
                                                                      if item[0] in STAGE_ORDER else 99))],
        ["stage", "status", "time", "detail"])
    rows = bench_lines(records)
    if rows:
        lines += ["", f"Benchmarks ({meta.get('dtype', 'bf16')}, median of per-round ratios; "
                      "targets: fwd <= 1.05x plain, untrain <= 1.10x floor (time and peak memory), "
                      "epilogue >= 85% of copy):", ""]
        lines += _table(rows, ["what", "value", "target", "verdict"])
        checks = [check for record in records for check in verdicts(record)]
        lines.append("")
        lines.append(f"targets: {sum(1 for check in checks if check['met'])} met, "
                     f"{sum(1 for check in checks if check['met'] is False)} missed of {len(checks)}")
    fails = [ln for ln in _read(os.path.join(out_dir, OUT_FILES["smoke"])).splitlines() if ln.startswith("FAIL")]
    junit = junit_counts(os.path.join(out_dir, OUT_FILES["junit"]))
    failed_tests = junit["failed"] if junit else []
    if fails or failed_tests:
        lines += ["", "Failures (full text: smoke.txt, log.txt, tests_cuda.xml):"]
        lines += [f"  smoke {ln[:160]}" for ln in fails[:max_fail_lines]]
        if len(fails) > max_fail_lines:
            lines.append(f"  ... {len(fails) - max_fail_lines} more smoke failures")
        lines += [f"  test  {name[:160]}" for name in failed_tests[:max_fail_lines]]
        if len(failed_tests) > max_fail_lines:
            lines.append(f"  ... {len(failed_tests) - max_fail_lines} more failed tests")
    infos = [ln for ln in _read(os.path.join(out_dir, OUT_FILES["smoke"])).splitlines() if ln.startswith("info")]
    if infos:
        lines += ["", "Smoke notes (not pass/fail):"] + [f"  {ln[:200]}" for ln in infos[:6]]
    lines += ["", f"exit {code}: 0 pass, 1 a failure, 2 no GPU, 3 incomplete (a stage ran out of time)"]
    return "\n".join(lines) + "\n", code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_sum = sub.add_parser("summary")
    p_sum.add_argument("out_dir")
    p_sum.add_argument("--total-s", type=float, default=None)
    p_cls = sub.add_parser("classify")
    p_cls.add_argument("kind", choices=["smoke", "tests", "memcheck", "racecheck", "bench"])
    p_cls.add_argument("--rc", type=int, required=True)
    p_cls.add_argument("--timed-out", action="store_true")
    p_cls.add_argument("--log", default=None)
    p_cls.add_argument("--junit", default=None)
    p_cls.add_argument("--jsonl", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "summary":
        text, code = summarize(args.out_dir, args.total_s)
        try:
            with open(os.path.join(args.out_dir, OUT_FILES["summary"]), "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as err:
            print(f"gpu_summary: cannot write summary.md: {err}", file=sys.stderr)
        print(text, end="")
        return code
    text = _read(args.log)
    if args.kind == "smoke":
        status, detail = classify_smoke(text, args.rc, args.timed_out)
    elif args.kind == "tests":
        status, detail = classify_tests(junit_counts(args.junit) if args.junit else None, text, args.rc,
                                        args.timed_out)
    elif args.kind == "bench":
        status, detail = classify_bench(read_jsonl(args.jsonl) if args.jsonl else [], args.rc, args.timed_out)
    else:
        status, detail = classify_sanitizer(text, args.rc, args.timed_out)
    print(f"{status}\t{detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
