"""Run one recipe end to end: ``python python/run_recipe.py mnist-resnet18 --data-root DATA --out runs/mnist-resnet18``.

``--smoke`` runs the same pipeline with tiny budgets on the embedded digits (on the ImageFolder tree for
``imagenet --data-root``; what the tests do). ``--list`` prints the recipes; ``--dry-run`` prints the `wfkern`
commands without running them. ImageNet from your own weights:

    python python/run_recipe.py imagenet --data-root ~/imagenet --weights resnet18.pth
    python python/run_recipe.py imagenet --data-root ~/imagenet --model timm:vit_small_patch16_224 --weights default
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
    p.add_argument("--checkpoint", default=None, help="use this original model (a wfkern checkpoint) instead of "
                                                      "training or importing one")
    p.add_argument("--weights", default=None, metavar="FILE|default",
                   help="import these timm / torchvision weights (a state dict or safetensors file, or 'default' "
                        "for the library's pretrained ones) with `wfkern import` instead of training")
    p.add_argument("--model", default=None, help="architecture of --weights, e.g. torchvision:resnet50 or "
                                                 "timm:vit_small_patch16_224 (default: the recipe's)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of --weights' model (default: the recipe's, 1000 for imagenet)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the recipe's)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny budgets: embedded digits (imagenet with --data-root: that tree)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None,
                   help="image-decoding worker processes for every command (default: none; 8 or so for ImageNet)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="bf16 autocast (default: fp32)")
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
                     device=args.device, threads=args.threads, weights=args.weights, model=args.model,
                     num_classes=args.num_classes, image_size=args.image_size, num_workers=args.num_workers,
                     precision=args.precision)
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
