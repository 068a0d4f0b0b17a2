"""Recipes that reproduce the paper's tables: one per dataset x backbone, each a plan of `wfkern` commands.

A recipe trains (or loads) the original model, untrains every class in one round, runs the single-class
baselines, evaluates every method and writes the report. Every step is a `wfkern` CLI call, so a recipe is
exactly what a user would type; each step is skipped when its output exists (and resumes when it is partial).
No library logic lives here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Recipe", "RECIPES", "SMOKE", "plan", "run_plan"]


@dataclass(frozen=True)
class Recipe:
    """One dataset x backbone setting (paper protocol: docs/method.md §3–§5)."""

    dataset: str
    model: str
    train_epochs: int
    image_size: Optional[int] = None
    model_args: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ("retrain", "random-labels", "neg-grad")
    eval_args: tuple[str, ...] = ()
    train_args: tuple[str, ...] = ()
    pretrained: bool = False  # the original is imported (--weights) or given (--checkpoint), not trained
    num_classes: Optional[int] = None  # classes of the imported model (--num-classes overrides)
    title: str = ""


def _r(dataset, model, epochs, label, **kw) -> Recipe:
    return Recipe(dataset, model, epochs, title=f"{label}: WF-Net vs single-class baselines", **kw)


RECIPES: dict[str, Recipe] = {
    "mnist-vgg16": _r("mnist", "vgg16", 20, "MNIST, VGG-16", image_size=32),
    "mnist-resnet18": _r("mnist", "resnet18", 20, "MNIST, ResNet-18"),
    "mnist-vit-t": _r("mnist", "vit_t", 50, "MNIST, ViT-T", image_size=32),
    "mnist-vit-s": _r("mnist", "vit_s", 50, "MNIST, ViT-S", image_size=32),
    "cifar10-vgg16": _r("cifar10", "vgg16", 60, "CIFAR-10, VGG-16"),
    "cifar10-resnet18": _r("cifar10", "resnet18", 60, "CIFAR-10, ResNet-18"),
    "cifar10-vit-t": _r("cifar10", "vit_t", 100, "CIFAR-10, ViT-T"),
    "cifar10-vit-s": _r("cifar10", "vit_s", 100, "CIFAR-10, ViT-S"),
    # ImageNet: pretrained weights imported with `wfkern import` (--weights FILE or default; --model picks any
    # torchvision / timm classifier) or a wfkern checkpoint (--checkpoint), an ImageFolder tree (--data-root),
    # 5 test images per class as in the paper, a seeded subset of 100 classes, no RT/MIA (the paper reports
    # Acc_r, Acc_f, ZRF there) and no single-class baselines.
    "imagenet": Recipe("imagenet", "torchvision:resnet18", 0, image_size=224, baselines=(), pretrained=True,
                       num_classes=1000,
                       eval_args=("--test-per-class", "5", "--sample-classes", "100", "--metrics", "acc,zrf,insdel"),
                       title="ImageNet-1k: WF-Net (5 test images per class, 100 seeded classes)"),
}

# Tiny budgets on the embedded digits: the same pipeline end to end in a minute or two on a CPU. Backbones are
# shrunk through their own options where they have them (fewer channels / blocks), never swapped.
SMOKE_MODEL_ARGS = {
    "resnet18": ("width=4",),
    "vit_t": ("depth=1", "embed_dim=24", "num_heads=2"),
    "vit_s": ("depth=1", "embed_dim=24", "num_heads=2"),
}
SMOKE = {
    "train": ("--epochs", "1"),
    "unlearn": ("--max-epochs", "1", "--evals-per-epoch", "1", "--patience", "1", "--batch-size", "64"),
    "retrain": ("--epochs", "1"), "random-labels": ("--epochs", "1"), "neg-grad": ("--max-epochs", "1"),
    "classes": "0,1",
    "evaluate": ("--rt-max-epochs", "2", "--rt-samples", "64", "--insdel-steps", "4", "--mia-max-samples", "100",
                 "--test-per-class", "20"),
}


@dataclass
class Step:
    """One command of a plan and the file whose existence means it is done."""

    argv: list[str]
    done_when: Optional[str] = None
    name: str = ""
    extra: dict = field(default_factory=dict)


def _own_data(recipe: Recipe, smoke: bool, data_root: Optional[str]) -> bool:
    """Whether the recipe reads its own dataset: always outside smoke mode; in smoke mode only an ImageNet-style
    recipe given an ImageFolder tree (a tiny one, in the tests), the others swap in the embedded digits."""
    return not smoke or (recipe.dataset == "imagenet" and data_root is not None)


def _data_args(recipe: Recipe, smoke: bool, data_root: Optional[str], image_size: Optional[int] = None) -> list[str]:
    if not _own_data(recipe, smoke, data_root):
        return ["--dataset", "digits"]
    args = ["--dataset", "imagefolder" if recipe.dataset == "imagenet" else recipe.dataset]
    if data_root:
        args += ["--data-root", data_root]
    size = image_size or recipe.image_size
    if size:
        args += ["--image-size", str(size)]
    return args


def plan(name: str, out: str, *, smoke: bool = False, data_root: Optional[str] = None,
         checkpoint: Optional[str] = None, device: Optional[str] = None, threads: Optional[int] = None,
         weights: Optional[str] = None, model: Optional[str] = None, num_classes: Optional[int] = None,
         image_size: Optional[int] = None, num_workers: Optional[int] = None,
         precision: Optional[str] = None) -> list[Step]:
    """The `wfkern` commands of recipe ``name`` writing under ``out`` (argv lists without the program name).

    Args:
        name: a key of ``RECIPES``.
        out: the run folder (model.safetensors, wfnet/, baselines/<m>/, eval/<m>/, report/).
        smoke: tiny budgets (the tests' mode) on the embedded digits, or, for ``imagenet`` with ``data_root``,
            on that ImageFolder tree.
        data_root: dataset folder (MNIST/CIFAR-10 files, or the ImageNet ImageFolder tree).
        checkpoint: an existing original model (a wfkern checkpoint).
        weights: a timm / torchvision weights file (state dict or safetensors), or "default", imported first
            with `wfkern import` into OUT/model.safetensors (``pretrained`` recipes need this or ``checkpoint``
            outside smoke mode).
        model: the architecture of ``weights`` (default: the recipe's, e.g. torchvision:resnet18).
        num_classes: the classes of ``weights``' model (default: the recipe's, 1000 for ImageNet).
        image_size: input side, instead of the recipe's.
        device / threads / num_workers / precision: passed to every command that runs a model.
    """
    if name not in RECIPES:
        raise ValueError(f"recipes.plan: name must be one of {sorted(RECIPES)}, got {name!r}")
    recipe = RECIPES[name]
    run_args = (["--device", device] if device else []) + (["--threads", str(threads)] if threads else [])
    run_args += (["--num-workers", str(num_workers)] if num_workers else []) + \
        (["--precision", precision] if precision else [])
    data = _data_args(recipe, smoke, data_root, image_size)
    model_path = os.path.join(out, "model.safetensors")
    steps: list[Step] = []
    if checkpoint is not None and weights is not None:
        raise ValueError(f"recipes.plan: checkpoint must be None when weights are imported, got {checkpoint!r} "
                         f"and weights {weights!r}")
    if checkpoint is None and weights is None and recipe.pretrained and not smoke:
        raise ValueError(f"recipes.plan: checkpoint must be the pretrained model for {name!r}, got None; or pass "
                         "weights (--weights FILE, or default) to import one")
    if weights is not None:
        classes = num_classes or recipe.num_classes
        if classes is None:
            raise ValueError(f"recipes.plan: num_classes must be given to import weights for {name!r}, got None")
        dataset = data[data.index("--dataset") + 1]
        size = data[data.index("--image-size") + 1] if "--image-size" in data else None
        import_argv = ["import", "--model", model or recipe.model, "--num-classes", str(classes),
                       "--weights", weights, "--out", model_path, "--dataset", dataset]
        import_argv += ["--image-size", size] if size else []
        steps.append(Step(import_argv, model_path, "import"))
    elif checkpoint is None:
        model_args = list(SMOKE_MODEL_ARGS.get(recipe.model, ())) if smoke else list(recipe.model_args)
        train = ["train", *data, "--model", recipe.model, "--out", model_path, "--no-progress", *run_args]
        train += [word for arg in model_args for word in ("--model-arg", arg)]
        train += list(SMOKE["train"]) if smoke else ["--epochs", str(recipe.train_epochs), *recipe.train_args]
        steps.append(Step(train, model_path, "train"))
    else:
        model_path = checkpoint
    checkpoint_args = ["--checkpoint", model_path]
    wf_dir = os.path.join(out, "wfnet")
    unlearn = ["unlearn", *checkpoint_args, *data, "--out-dir", wf_dir, "--no-progress", *run_args]
    unlearn += list(SMOKE["unlearn"]) if smoke else []
    steps.append(Step(unlearn, os.path.join(wf_dir, "gates.safetensors"), "unlearn"))
    classes = ["--classes", SMOKE["classes"]] if smoke else []
    for method in recipe.baselines:
        baseline_dir = os.path.join(out, "baselines", method)
        baseline = ["baseline", "--method", method, *checkpoint_args, *data, "--out-dir", baseline_dir, "--no-progress",
                    *classes, *run_args]
        baseline += list(SMOKE[method]) if smoke else []
        steps.append(Step(baseline, os.path.join(baseline_dir, "cost.json"), f"baseline {method}"))
    ev_common = [*checkpoint_args, *data, "--no-progress", *classes, *run_args]
    if smoke:
        ev_common += list(SMOKE["evaluate"])
        if "--metrics" in recipe.eval_args:  # the recipe's metrics (ImageNet: no RT / MIA), on a tiny budget
            ev_common += ["--metrics", recipe.eval_args[recipe.eval_args.index("--metrics") + 1]]
    else:
        ev_common += list(recipe.eval_args)
    evals = {"original": ["--original"], "wfnet": ["--gates", os.path.join(wf_dir, "gates.safetensors")]}
    evals.update({method: ["--baseline-dir", os.path.join(out, "baselines", method)] for method in recipe.baselines})
    for method, what in evals.items():
        eval_dir = os.path.join(out, "eval", method)
        steps.append(Step(["evaluate", *what, "--out", eval_dir, *_metrics_for(method, ev_common)],
                          os.path.join(eval_dir, "results.json"), f"evaluate {method}"))
    report = ["report", *[os.path.join(out, "eval", method) for method in evals], "--out", os.path.join(out, "report"),
              "--title", recipe.title + ("" if not smoke else " (smoke run)" if _own_data(recipe, smoke, data_root)
                                   else " (smoke run on the embedded digits)")]
    steps.append(Step(report, None, "report"))
    return steps


def _metrics_for(method: str, args: list[str]) -> list[str]:
    """``args`` with the metrics that need WF gates (insertion / deletion) dropped for every method but WF-Net:
    `wfkern evaluate` refuses a metric asked for explicitly that a method cannot have."""
    if method == "wfnet" or "--metrics" not in args:
        return list(args)
    i = args.index("--metrics")
    kept = ",".join(m for m in args[i + 1].split(",") if m != "insdel")
    return args[:i + 1] + [kept] + args[i + 2:]


def _subprocess(argv: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "wfkern.cli.main", *argv])


def run_plan(steps: list[Step], *, dry_run: bool = False, log=print, runner=_subprocess) -> int:
    """Run each step (``python -m wfkern.cli.main ...`` by default; ``runner(argv) -> int`` to run them otherwise);
    skip steps whose output exists. Returns 0 or the first failing step's exit status."""
    for step in steps:
        shown = "wfkern " + " ".join(shlex.quote(a) for a in step.argv)
        if step.done_when and os.path.exists(step.done_when):
            log(f"[skip] {step.name}: {step.done_when} exists")
            continue
        log(f"[run] {shown}")
        if dry_run:
            continue
        if step.done_when:
            os.makedirs(os.path.dirname(os.path.abspath(step.done_when)), exist_ok=True)
        rc = runner(step.argv)
        if rc != 0:
            log(f"[fail] {step.name} exited with {rc}")
            return rc
    return 0
