"""``wfkern report``: Markdown + self-contained HTML report and PNG figures from `wfkern evaluate` results."""

from __future__ import annotations

import argparse
import os

from wfkern.cli._common import ensure_dir
from wfkern.cli.main import UserError
from wfkern.reports import load_results, table1, to_markdown, write_report

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the Markdown/HTML report and figures from evaluation results",
                       description="Collect `wfkern evaluate` results (one per method) into Table 1 (Acc_r, Acc_f, "
                                   "ZRF, RT, MIA, cost), Table 2 (insertion/deletion), a per-class table and PNG "
                                   "figures; the HTML embeds the figures.")
    p.add_argument("results", nargs="+", help="results.json files or folders holding one (one per method)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.html, *.png)")
    p.add_argument("--title", default="wfkern unlearning report")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = {}
    for path in args.results:
        if not os.path.exists(path):
            raise UserError(f"results must be results.json files or folders, got a missing {path!r}")
        res = load_results(path)
        if res.get("method") in results:
            raise UserError(f"results must hold one run per method, got {res.get('method')!r} twice ({path!r})")
        results[res.get("method", path)] = res
    ensure_dir(args.out, "--out")
    paths = write_report(results, args.out, title=args.title)
    print(to_markdown(table1(results)))
    print(f"report -> {paths['markdown']} and {paths['html']} ({len(paths['figures'])} figures)")
    return 0
