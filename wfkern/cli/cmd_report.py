"""``wfkern report``: Markdown + self-contained HTML report and PNG figures from `wfkern evaluate` results."""

from __future__ import annotations

import argparse
import os

from wfkern.cli._common import check_output_dir
from wfkern.cli.errors import UserError
from wfkern.metrics.manifest import read_run_manifest
from wfkern.reports import align_classes, gap_table, load_results, mia_verdict, read_history, table1, to_markdown
from wfkern.reports import write_report
from wfkern.reports.report import report_files
from wfkern.reports.spread import manifest_lines
from wfkern.reports.tables import depth_table, method_label, ordered, reference_method

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the Markdown/HTML report and figures from evaluation results",
                       description="Collect `wfkern evaluate` results (one per method, any method name) into Table 1 "
                                   "(Acc_r, Acc_f, ZRF, RT, MIA with the attacker's accuracy, cost), the gap to "
                                   "retraining (when a retrain result is given), Table 2 (insertion/deletion), a "
                                   "per-class table and PNG figures (the untraining curve among them); the HTML "
                                   "embeds the figures. Methods evaluated on different classes are compared on "
                                   "the classes they share. A failed report leaves no folder behind.")
    p.add_argument("results", nargs="+", help="results.json files or folders holding one (one per method)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.html, *.png)")
    p.add_argument("--title", default="wfkern unlearning report", help="heading of the report")
    p.add_argument("--reference", default=None, metavar="METHOD",
                   help="the retrained-from-scratch method the gap table measures to (default: 'retrain' when "
                        "given, else no gap table)")
    p.add_argument("--run-dir", action="append", default=None, metavar="[METHOD=]DIR",
                   help="the `wfkern unlearn` folder (history.jsonl) of a method, for its untraining curve; "
                        "repeatable (default: the folder `wfkern evaluate --filters` recorded)")
    p.set_defaults(run=run)


def _attach_runs(results: dict, specs: list[str] | None) -> None:
    """--run-dir [METHOD=]DIR: read each run's history.jsonl (and manifest.json) into its method's result."""
    for spec in specs or []:
        method, sep, folder = spec.partition("=")
        if not sep or (method not in results and os.path.isdir(spec)):
            method, folder = None, spec
        if method is None:
            wf = [m for m in ordered(results) if results[m]["summary"].get("insertion_auc") is not None
                  or (results[m].get("cost") or {}).get("method") == "wfnet"]
            if len(wf) != 1:
                raise UserError(f"--run-dir must name its method as METHOD=DIR when the results do not hold exactly "
                                f"one WF-Net result, got {spec!r} for methods {ordered(results)}")
            method = wf[0]
        if method not in results:
            raise UserError(f"--run-dir must name one of the methods {ordered(results)}, got {method!r}")
        try:
            history = read_history(folder)
        except FileNotFoundError:
            raise UserError(f"--run-dir must be a `wfkern unlearn` folder with history.jsonl, got {folder!r}") from None
        if not history:
            raise UserError(f"--run-dir must hold at least one validation record, got an empty history in {folder!r}")
        results[method] = {**results[method], "unlearn_history": history, "unlearn_run_dir": os.path.abspath(folder)}
        man = read_run_manifest(folder)  # the run's own record of how it was made, when it wrote one
        if man is not None:
            results[method]["manifest"] = {**(results[method].get("manifest") or {}), "unlearn": man}


def run(args: argparse.Namespace) -> int:
    results = {}
    for path in args.results:
        if not os.path.exists(path):
            raise UserError(f"results must be results.json files or folders, got a missing {path!r}")
        res = load_results(path)  # a malformed or foreign file is a one-line error naming it
        method = res.get("method") or path
        if method in results:
            raise UserError(f"results must hold one run per method, got {method!r} twice ({path!r})")
        results[method] = res
    if args.reference is not None and args.reference not in results:
        raise UserError(f"--reference must be one of the methods given {ordered(results)}, got {args.reference!r}")
    _attach_runs(results, args.run_dir)
    try:
        aligned, _, class_note = align_classes(results)
    except ValueError as e:  # no class in common: say which each method evaluated
        raise UserError(str(e).split(": ", 1)[1]) from None
    ref = reference_method(aligned, args.reference)
    # before any figure is drawn; creating nothing: a failed report leaves no folder behind
    check_output_dir(args.out, "--out", files=tuple(report_files(aligned)), create=False)
    paths = write_report(results, args.out, title=args.title, reference=ref)
    if class_note:
        print(class_note)
    print(to_markdown(table1(aligned)))
    verdict = mia_verdict(aligned)
    if verdict:
        print(verdict)
    if ref is not None:
        print(f"\nGap to retraining (|method − {method_label(ref, aligned[ref]).strip('*')}|, percentage points; "
              "lower is closer):")
        print(to_markdown(gap_table(aligned, ref)))
    depth = depth_table(aligned)
    if depth[1]:
        print("\nDepth of forgetting (probe / retain fine-tuning: lower is deeper; MIA-efficacy: higher):")
        print(to_markdown(depth))
    print("\nManifest:")
    for line in manifest_lines(aligned):
        print(f"  {line}")
    print(f"report -> {paths['markdown']} and {paths['html']} ({len(paths['figures'])} figures)")
    return 0
