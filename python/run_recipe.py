"""Run one recipe end to end: ``python python/run_recipe.py mnist-resnet18 --data-root DATA --out runs/mnist-resnet18``.

``--smoke`` runs the same pipeline on the embedded digits with tiny budgets (what the tests do). ``--list``
prints the recipes; ``--dry-run`` prints the `wfkern` commands without running them.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recipes import RECIPES, plan, run_plan  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", choices=sorted(RECIPES), help="dataset-backbone")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>)")
    p.add_argument("--data-root", default=None, help="MNIST/CIFAR-10 files, or the ImageNet ImageFolder tree")
    p.add_argument("--checkpoint", default=None, help="use this original model instead of training one "
                                                      "(ImageNet: the pretrained weights as a wfkern checkpoint)")
    p.add_argument("--smoke", action="store_true", help="embedded digits, tiny budgets")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    if args.list or not args.recipe:
        for name, r in RECIPES.items():
            print(f"{name:18s} {r.title}")
        return 0
    out = args.out or os.path.join("runs", args.recipe + ("-smoke" if args.smoke else ""))
    try:
        steps = plan(args.recipe, out, smoke=args.smoke, data_root=args.data_root, checkpoint=args.checkpoint,
                     device=args.device, threads=args.threads)
    except ValueError as e:
        print(f"run_recipe: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    rc = run_plan(steps, dry_run=args.dry_run)
    if rc == 0 and not args.dry_run:
        print(f"report: {os.path.join(out, 'report', 'report.html')}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
