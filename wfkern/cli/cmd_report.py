"""``wfkern report``: Markdown + self-contained HTML report and PNG figures from `wfkern evaluate` results."""

from __future__ import annotations

import argparse
import os

from wfkern.cli._common import check_output_dir
from wfkern.cli.main import UserError
from wfkern.reports import load_results, table1, to_markdown, write_report
from wfkern.reports.report import report_files

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the Markdown/HTML report and figures from evaluation results",
                       description="Collect `wfkern evaluate` results (one per method) into Table 1 (Acc_r, Acc_f, "
                                   "ZRF, RT, MIA, cost), Table 2 (insertion/deletion), a per-class table and PNG "
                                   "figures; the HTML embeds the figures.")
    p.add_argument("results", nargs="+", help="results.json files or folders holding one (one per method)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.html, *.png)")
    p.add_argument("--title", default="wfkern unlearning report", help="heading of the report")
    p.set_defaults(run=run)


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
    check_output_dir(args.out, "--out", files=tuple(report_files(results)))  # before any figure is drawn
    paths = write_report(results, args.out, title=args.title)
    print(to_markdown(table1(results)))
    print(f"report -> {paths['markdown']} and {paths['html']} ({len(paths['figures'])} figures)")
    return 0
