"""``wfkern unlearn``: one untraining round on a trained checkpoint; writes the filters and a history."""

from __future__ import annotations

import argparse
import os
import sys

import wfkern
from wfkern.cli._common import (add_data_args, add_device_arg, add_loader_args, add_settings_flags, check_output_dir,
                                checkpoint_and_splits, data_settings, format_table, per_class_accuracy, settings_given,
                                start_command, with_throughput)
from wfkern.cli.errors import UserError
from wfkern.metrics.manifest import MANIFEST_FILE, run_manifest, write_run_manifest
from wfkern.patch.surgery import GATE_MLP_CHOICES, gate_placement, gates_mlp
from wfkern.train import init_distributed
from wfkern.unlearn import PAPER_RECIPE, UnlearnConfig, unlearn
from wfkern.unlearn.config import setting_problem
from wfkern.unlearn.state import GATES_FILE, HISTORY_FILE, STATE_FILE, ResumeMismatch, format_differences, load_state

__all__ = ["add_parser", "run", "add_unlearn_args", "unlearn_kwargs", "check_data_matches", "UNLEARN_FILES"]

# What an untraining run writes into its folder.
UNLEARN_FILES = (GATES_FILE, HISTORY_FILE, STATE_FILE, MANIFEST_FILE)


def add_unlearn_args(p: argparse.ArgumentParser) -> None:
    """--recipe and one flag per ``UnlearnConfig`` field, with its type, default and help (written there)."""
    untraining = p.add_argument_group("untraining (defaults: the measured recipe, docs/untraining.md)")
    untraining.add_argument("--recipe", choices=("default", "paper"), default="default",
                            help="paper = the paper's literal setting: CE + reciprocal losses, gate regulariser, "
                                 "SGD lr 100, no clipping (collapses; docs/untraining.md)")
    add_settings_flags(untraining, UnlearnConfig, also=("--recipe paper", PAPER_RECIPE))


# A rule the command line words its own way: the library's None is the word 'none' here.
_FLAG_RULES = {"clip_norm": "be a positive finite number or 'none' (no clipping)"}


def unlearn_kwargs(args: argparse.Namespace) -> dict:
    """Every ``UnlearnConfig`` setting from the parsed flags: the dataclass's defaults, then --recipe's, then the
    flags given.

    Every value set here is checked with the library's own rules (``wfkern.unlearn.config.setting_problem``),
    so a bad flag is a one-line error before any data is loaded or any model trained.
    """
    chosen = {**(PAPER_RECIPE if args.recipe == "paper" else {}), **settings_given(args, UnlearnConfig)}
    settings = {**UnlearnConfig().to_dict(), **chosen}
    for key, value in settings.items():
        problem = setting_problem(key, value) if key in chosen else None
        if problem is not None:
            shown = repr(value) if isinstance(value, str) else value
            raise UserError(f"--{key.replace('_', '-')} must {_FLAG_RULES.get(key, problem[1])}, got {shown}")
    return settings


def check_data_matches(info, config, checkpoint: str) -> None:
    """A dataset whose classes / channels differ from the checkpoint's is a one-line error."""
    if info.num_classes != config.num_classes or info.in_chans != config.in_chans:
        raise UserError(f"--checkpoint must match the dataset, got a model for {config.num_classes} classes / "
                        f"{config.in_chans} channels ({checkpoint}) and data '{info.name}' with {info.num_classes} "
                        f"classes / {info.in_chans} channels")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("unlearn", help="untrain every class in one round (trains the WF gates)",
                       description="Patch a trained checkpoint with WF layers and untrain all classes in one round. "
                                   "Writes OUT_DIR/gates.safetensors, history.jsonl and a resumable "
                                   "unlearn_state.safetensors. Runs under torchrun for several processes.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint from `wfkern train`")
    p.add_argument("--out-dir", required=True, help="folder for filters, history and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR's last checkpoint")
    p.add_argument("--gate-mlp", choices=GATE_MLP_CHOICES, nargs="?", const="fc1", default="auto",
                   help="ViTs: where each block's gates sit. auto (the default): every linear layer of the block for "
                        "a ViT (all), the convs for a CNN; qkv: the attention's qkv projection only (the paper's); "
                        "fc1: also the MLP's first layer (a bare --gate-mlp); all: qkv, attention output, both MLP "
                        "layers (docs/untraining.md). With --resume, auto continues the run's own placement. "
                        "`wfkern evaluate` reads it from the gates file")
    p.add_argument("--no-progress", action="store_true",
                   help="hide the progress (a bar on a terminal, a plain line every 10%% of the steps otherwise)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="also log every validation as a full line (as `wfkern -v unlearn`)")
    add_data_args(p, dataset_default=None)
    add_unlearn_args(p)
    add_device_arg(p)
    add_loader_args(p)
    p.set_defaults(run=with_throughput(run))


def run(args: argparse.Namespace) -> int:
    start_command(args)
    kwargs = unlearn_kwargs(args)
    if args.resume and not os.path.isdir(args.out_dir):
        raise UserError(f"--out-dir must hold the run to resume, got a missing folder {args.out_dir!r}")
    check_output_dir(args.out_dir, "--out-dir", files=UNLEARN_FILES)
    ctx, device = init_distributed(args.device)
    model, config, (train, val, test) = checkpoint_and_splits(args, device, ("train", "val", "test"))
    check_data_matches(train.info, config, args.checkpoint)
    wf = _patched(args, model, config.num_classes)
    try:
        result = unlearn(wf, train, val, UnlearnConfig(**kwargs), device=device, out_dir=args.out_dir,
                         resume=args.resume, progress=not args.no_progress and ctx.rank == 0,
                         data_settings=data_settings(args, config))
    except ResumeMismatch as e:
        raise UserError(f"--resume must use the run's settings, got {format_differences(e.differences, _LABELS)}; "
                        "leave out --resume to start over, or choose another --out-dir") from None
    if ctx.rank == 0:
        _write_manifest(args, config, result, train, val)
        rows = per_class_accuracy(wf, test, config.num_classes, device)
        mean_f = sum(r[0] for r in rows) / len(rows)
        mean_r = sum(r[1] for r in rows) / len(rows)
        table = format_table(["class", "Acc_r %", "Acc_f %"],
                             [[c, 100 * r, 100 * f] for c, (f, r) in enumerate(rows)] + [["mean", 100 * mean_r, 100 * mean_f]])
        print(table)
        stop = ("early stop" if result.stopped_early else
                "step cap" if result.steps >= result.config["max_steps"] else "epoch cap")
        print(f"untrained {result.steps} steps ({stop}) in {result.seconds:.1f}s; best val objective "
              f"{result.best_objective:.4f} at step {result.best_step}; filters -> "
              f"{os.path.join(args.out_dir, 'gates.safetensors')}", file=sys.stdout)
    return 0


# How a resume's differences are named on the command line (the rest by their flag's own name).
_LABELS = {"base_fingerprint": "checkpoint fingerprint"}


def _patched(args: argparse.Namespace, model, num_classes: int) -> wfkern.WFModel:
    """``model`` patched with --gate-mlp; a resumed run is patched as the run it continues was: --gate-mlp auto takes
    the run's own placement, another value must give the same layers (said up front). A run state from before the
    placements had names (qkv only, or + fc1) reads the same way."""
    path = os.path.join(args.out_dir, STATE_FILE)
    if not (args.resume and os.path.isfile(path)):  # unlearn() says a checkpoint is missing
        return wfkern.patch(model, num_classes=num_classes, gate_mlp=args.gate_mlp)
    current, _, _, _ = load_state(path)
    started_with = gate_placement(gates_mlp(key.rpartition(".")[0] for key in current))
    given = started_with if args.gate_mlp == "auto" else args.gate_mlp
    wf = wfkern.patch(model, num_classes=num_classes, gate_mlp=given)
    if gate_placement(gates_mlp(wf.wf_layers())) != started_with:
        raise UserError(f"--gate-mlp must match the run being resumed, which was started with {started_with}, "
                        f"got {args.gate_mlp}; leave it out (auto) to continue with the run's own")
    return wf


def _write_manifest(args: argparse.Namespace, config, result, train, val) -> None:
    """OUT_DIR/manifest.json: versions, the seed, every setting (the run's, its data and placement) and the hash of
    the splits read (``wfkern.metrics.manifest``); `wfkern evaluate --gates` carries it into its results."""
    settings = {**result.config, **data_settings(args, config), "gate_mlp": args.gate_mlp,
                "checkpoint": os.path.abspath(args.checkpoint)}
    write_run_manifest(args.out_dir, run_manifest(settings, {"seed": result.config["seed"]}, {"train": train, "val": val}))
