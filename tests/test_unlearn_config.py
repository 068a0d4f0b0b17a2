"""Untraining and evaluation settings live in one place: their dataclass. ``unlearn`` / ``evaluate`` take it (and
keyword overrides), and the command-line flags are made from its fields."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest
import torch

import wfkern
from wfkern.cli._common import add_settings_flags, settings_given
from wfkern.cli.cmd_unlearn import unlearn_kwargs
from wfkern.cli.main import build_parser
from wfkern.data import get_dataset
from wfkern.metrics import EvalSettings, PerClassModels, evaluate
from wfkern.models import create_model
from wfkern.unlearn import LAMBDA1_DEFAULTS, LAMBDA1_MARGIN, LR_DEFAULTS, PAPER_RECIPE, UnlearnConfig, unlearn
from wfkern.unlearn.config import MARGIN_DEFAULTS, MAX_EPOCHS_DEFAULTS, MAX_STEPS_PER_CLASS, PATIENCE_DEFAULTS

FLAG_FIELDS = {
    UnlearnConfig: list(dataclasses.fields(UnlearnConfig)),
    EvalSettings: [f for f in dataclasses.fields(EvalSettings) if f.metadata.get("flag", True)],
}


@pytest.fixture(scope="module")
def digits_small():
    train = get_dataset("digits", split="train", seed=0)
    val = get_dataset("digits", split="val", seed=0)
    return train.subset(torch.arange(128)), val.subset(torch.arange(64))


def tiny_wf():
    torch.manual_seed(0)
    return wfkern.patch(create_model("small_cnn", 10, 1, 8, widths=(8, 16, 16)).eval(), num_classes=10)


def subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def flag_of(parser: argparse.ArgumentParser, field: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == field and a.option_strings)


def parse(command: str, *flags: str) -> argparse.Namespace:
    required = {"unlearn": ["--checkpoint", "c", "--out-dir", "o"], "demo": [],
                "evaluate": ["--checkpoint", "c", "--original", "--out", "o"]}[command]
    return build_parser().parse_args([command, *required, *flags])


# --- one default per setting ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [UnlearnConfig, EvalSettings])
def test_every_setting_has_its_default_and_help_in_the_dataclass(cls):
    for f in dataclasses.fields(cls):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
    cls()  # the defaults make a valid setting


@pytest.mark.parametrize("fn,cls,run_args", [
    (unlearn, UnlearnConfig, {"wf", "train_data", "val_data", "config", "device", "out_dir", "resume", "progress",
                              "data_settings"}),
    (evaluate, EvalSettings, None),
])
def test_the_functions_spell_out_no_setting(fn, cls, run_args):
    params = inspect.signature(fn).parameters
    assert not {f.name for f in dataclasses.fields(cls)} & set(params), "a setting is also a parameter"
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if run_args is not None:
        assert {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD} == run_args


@pytest.mark.parametrize("command,cls", [("unlearn", UnlearnConfig), ("demo", UnlearnConfig),
                                         ("evaluate", EvalSettings)])
def test_each_field_is_a_flag_whose_only_default_is_the_dataclass(command, cls):
    parser = subcommand(command)
    for f in FLAG_FIELDS[cls]:
        action = flag_of(parser, f.name)
        old = [f.metadata["old_name"]] if "old_name" in f.metadata else []  # a former name, kept one release
        assert action.option_strings == ["--" + name.replace("_", "-") for name in [f.name, *old]]
        assert action.default is None, f"--{f.name} has a second default, {action.default!r}"
        shown = f.metadata["none"] if f.default is None else str(f.default)
        assert f"(default: {shown}" in action.help and f.metadata["help"] in action.help
        if "choices" in f.metadata:
            assert tuple(action.choices) == tuple(f.metadata["choices"])
    # no flag is left without its field: the untraining group holds --recipe and the fields, nothing else
    if cls is UnlearnConfig:
        group = next(g for g in parser._action_groups if g.title.startswith("untraining"))
        assert {a.dest for a in group._group_actions} == {"recipe"} | {f.name for f in FLAG_FIELDS[cls]}


@pytest.mark.parametrize("command", ["unlearn", "demo"])
def test_no_flags_give_the_dataclass_defaults(command):
    assert unlearn_kwargs(parse(command)) == UnlearnConfig().to_dict()
    assert EvalSettings(**settings_given(parse("evaluate"), EvalSettings)) == EvalSettings()


def test_every_unlearn_flag_reaches_its_setting():
    other = {"lambda0": "2", "lambda1": "7", "lambda2": "0.5", "eps": "1e-5", "chi": "2", "batch_size": "64",
             "optimizer": "adam", "lr": "0.1", "momentum": "0.5", "clip_norm": "2", "lambda1_warmup": "0.25",
             "gate_init": "1.5", "max_epochs": "4", "max_steps": "50", "evals_per_epoch": "3", "patience": "2",
             "seed": "9", "retain_loss": "ce", "forget_loss": "reciprocal", "temperature": "3", "margin": "0.5"}
    assert set(other) == {f.name for f in FLAG_FIELDS[UnlearnConfig]}  # a new field needs a line here
    flags = [x for name, text in other.items() for x in ("--" + name.replace("_", "-"), text)]
    kw = unlearn_kwargs(parse("unlearn", *flags))
    resolved = UnlearnConfig(lambda1=1.0, margin=1.0, lr=1.0, clip_norm=1.0, max_epochs=1, max_steps=1, patience=1)
    want = {f.name: type(getattr(resolved, f.name))(other[f.name]) for f in FLAG_FIELDS[UnlearnConfig]}
    assert kw == want
    assert UnlearnConfig(**kw).to_dict() == want


def test_every_evaluate_flag_reaches_its_setting():
    other = {"metrics": ("acc,zrf", ("acc", "zrf")), "seed": ("3", 3), "batch_size": ("17", 17),
             "zrf_seed": ("4", 4), "mia_max_samples": ("50", 50), "rt_samples": ("20", 20), "rt_lr": ("0.5", 0.5),
             "rt_batch_size": ("8", 8), "rt_max_epochs": ("6", 6), "rt_target": ("0.5", 0.5),
             "insdel_steps": ("5", 5), "insdel_order": ("random", "random"), "test_per_class": ("2", 2),
             "probe_layers": ("head,fc:in", ("head", "fc:in")), "probe_max_samples": ("30", 30),
             "probe_max_iter": ("7", 7), "probe_inv_reg": ("0.5", 0.5), "rft_part": ("head", "head"),
             "rft_epochs": ("2", 2), "rft_samples": ("40", 40), "rft_lr": ("0.01", 0.01), "rft_batch_size": ("9", 9)}
    assert set(other) == {f.name for f in FLAG_FIELDS[EvalSettings]}  # a new field needs a line here
    flags = [x for name, (text, _) in other.items() for x in ("--" + name.replace("_", "-"), text)]
    s = EvalSettings(**settings_given(parse("evaluate", *flags), EvalSettings))
    assert {name: getattr(s, name) for name in other} == {name: value for name, (_, value) in other.items()}


def test_recipe_fills_in_and_explicit_flags_win():
    kw = unlearn_kwargs(parse("unlearn", "--recipe", "paper", "--lr", "5"))
    assert kw == {**UnlearnConfig().to_dict(), **PAPER_RECIPE, "lr": 5.0}
    assert unlearn_kwargs(parse("unlearn", "--recipe", "paper", "--clip-norm", "2"))["clip_norm"] == 2.0
    assert unlearn_kwargs(parse("unlearn", "--clip-norm", "off"))["clip_norm"] is None


def test_a_new_field_becomes_a_flag():
    """What ``add_settings_flags`` makes of fields it has never seen: type, None word, choices, default shown."""
    @dataclasses.dataclass
    class Knobs:
        rate: float = dataclasses.field(default=0.25, metadata={"help": "a rate"})
        count: int = dataclasses.field(default=3, metadata={"help": "a count"})
        mode: str = dataclasses.field(default="a", metadata={"help": "a mode", "choices": ("a", "b")})
        cap: float | None = dataclasses.field(default=1.0, metadata={"help": "a cap", "none": "no cap"})
        auto: int | None = dataclasses.field(default=None, metadata={"help": "chosen", "none": "picked for you"})

    p = argparse.ArgumentParser()
    add_settings_flags(p, Knobs, also=("--fast", {"count": 1, "rate": 0.25}))
    helps = {a.dest: a.help for a in p._actions}
    assert "(default: 3; --fast: 1)" in helps["count"] and "(default: 0.25)" in helps["rate"]
    assert "'none': no cap" in helps["cap"] and "(default: picked for you)" in helps["auto"]
    assert settings_given(p.parse_args([]), Knobs) == {}
    got = settings_given(p.parse_args(["--rate", "0.5", "--count", "7", "--mode", "b", "--cap", "none",
                                       "--auto", "2"]), Knobs)
    assert got == {"rate": 0.5, "count": 7, "mode": "b", "cap": None, "auto": 2}
    assert settings_given(p.parse_args(["--cap", "4"]), Knobs) == {"cap": 4.0}
    with pytest.raises(SystemExit):
        p.parse_args(["--count", "2.5"])


# --- unlearn(config, **overrides) --------------------------------------------------------------------------------

def test_an_unknown_setting_is_a_clear_error_before_the_gates_change(digits_small):
    wf = tiny_wf()
    before = {k: v.clone() for k, v in wf.gates_state_dict().items()}
    with pytest.raises(TypeError) as err:
        unlearn(wf, *digits_small, lrr=1.0, progress=False)
    msg = str(err.value)
    assert msg.startswith("wfkern.unlearn: settings must be fields of UnlearnConfig (") and msg.endswith("got 'lrr'")
    assert all(f"{f.name}" in msg for f in dataclasses.fields(UnlearnConfig)) and "\n" not in msg
    assert all(torch.equal(before[k], v) for k, v in wf.gates_state_dict().items())
    with pytest.raises(TypeError, match=r"wfkern.unlearn: config must be an UnlearnConfig .*got dict"):
        unlearn(wf, *digits_small, {"lr": 1.0}, progress=False)


def test_an_unknown_evaluation_setting_is_a_clear_error():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    um = PerClassModels(model, lambda c: model, num_classes=3)
    data = torch.utils.data.TensorDataset(torch.randn(6, 4), torch.arange(6) % 3)
    with pytest.raises(TypeError, match=r"^wfkern.evaluate: settings must be fields of EvalSettings \(metrics, .*"
                                        r"got 'rt_epochs'$"):
        evaluate(um, data, progress=False, rt_epochs=3)


def test_config_and_keywords_run_the_same_and_the_config_is_left_alone(digits_small):
    run = dict(batch_size=64, max_epochs=1, evals_per_epoch=2, lr=10.0, clip_norm=None)
    by_keywords = tiny_wf()
    res_kw = unlearn(by_keywords, *digits_small, progress=False, **run)
    config = UnlearnConfig(batch_size=64, max_epochs=3, evals_per_epoch=2)
    by_config = tiny_wf()
    res_cfg = unlearn(by_config, *digits_small, config, progress=False, max_epochs=1, lr=10.0, clip_norm=None)
    resolved = {"lambda1": LAMBDA1_MARGIN, "margin": MARGIN_DEFAULTS["cnn"], "patience": PATIENCE_DEFAULTS["cnn"],
                "max_steps": MAX_STEPS_PER_CLASS["cnn"] * 10}
    assert res_kw.config == res_cfg.config == {**UnlearnConfig().to_dict(), **run, **resolved}
    a, b = by_keywords.gates_state_dict(), by_config.gates_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert config == UnlearnConfig(batch_size=64, max_epochs=3, evals_per_epoch=2)  # not resolved in place


def test_lambda1_and_lr_none_are_resolved_once():
    wf = tiny_wf()
    assert UnlearnConfig().lambda1 is None and UnlearnConfig().lr is None
    assert UnlearnConfig().for_model(wf).lambda1 == LAMBDA1_MARGIN  # the margin loss: one λ1 for every family
    assert UnlearnConfig(forget_loss="reciprocal").for_model(wf).lambda1 == LAMBDA1_DEFAULTS["cnn"]
    assert UnlearnConfig().for_model(wf).lr == LR_DEFAULTS["adam"]
    assert UnlearnConfig(optimizer="sgd").for_model(wf).lr == LR_DEFAULTS["sgd"] == 100.0
    assert UnlearnConfig(lr=0.5).for_model(wf).lr == 0.5
    assert UnlearnConfig(lambda1=2.0).for_model(wf).lambda1 == 2.0
    with pytest.raises(ValueError, match="wfkern.unlearn: lambda1 must be a finite number >= 0, got -1"):
        UnlearnConfig().replace(lambda1=-1)


def test_run_length_is_the_model_familys_unless_given():
    """A ViT (gates on qkv only) converges about three times slower than a CNN: longer cap, more patience."""
    cnn = tiny_wf()
    vit = wfkern.patch(create_model("vit_t", 10, 1, 8, depth=1, embed_dim=12, num_heads=2, patch_size=4).eval(), 10)
    assert UnlearnConfig().max_epochs is None and UnlearnConfig().patience is None
    for wf, family in ((cnn, "cnn"), (vit, "vit")):
        resolved = UnlearnConfig().for_model(wf)
        assert (resolved.max_epochs, resolved.patience) == (MAX_EPOCHS_DEFAULTS[family], PATIENCE_DEFAULTS[family])
        assert resolved.max_steps == MAX_STEPS_PER_CLASS[family] * 10  # the step cap scales with the classes
        assert UnlearnConfig(forget_loss="reciprocal").for_model(wf).lambda1 == LAMBDA1_DEFAULTS[family]
        given = UnlearnConfig(max_epochs=2, max_steps=7, patience=1).for_model(wf)
        assert (given.max_epochs, given.max_steps, given.patience) == (2, 7, 1)
    assert MAX_EPOCHS_DEFAULTS["vit"] > MAX_EPOCHS_DEFAULTS["cnn"]
    assert MAX_STEPS_PER_CLASS["vit"] > MAX_STEPS_PER_CLASS["cnn"]
    hundred = wfkern.patch(create_model("small_cnn", 100, 1, 8, widths=(8, 16, 16)).eval(), num_classes=100)
    assert UnlearnConfig().for_model(hundred).max_steps == MAX_STEPS_PER_CLASS["cnn"] * 100
    with pytest.raises(ValueError, match="wfkern.unlearn: max_steps must be >= 1, got 0"):
        UnlearnConfig(max_steps=0)
    with pytest.raises(TypeError, match="wfkern.unlearn: max_epochs must be an integer >= 1, got 2.5"):
        UnlearnConfig(max_epochs=2.5)
    with pytest.raises(ValueError, match="wfkern.unlearn: patience must be >= 1, got 0"):
        UnlearnConfig(patience=0)


def test_margin_is_the_model_familys_unless_given():
    """ViTs (every linear layer of each block gated by default) take margin 4, CNNs 3; a given margin is kept, and
    a ViT patched with the paper's qkv-only gates is still a ViT."""
    vit_model = create_model("vit_t", 10, 1, 8, depth=1, embed_dim=12, num_heads=2, patch_size=4).eval()
    assert UnlearnConfig().margin is None and MARGIN_DEFAULTS == {"cnn": 3.0, "vit": 4.0}
    for wf, margin in ((tiny_wf(), 3.0), (wfkern.patch(vit_model, 10), 4.0),
                       (wfkern.patch(vit_model, 10, gate_mlp="qkv"), 4.0)):
        assert UnlearnConfig().for_model(wf).margin == margin
        assert UnlearnConfig(margin=2.5).for_model(wf).margin == 2.5
    with pytest.raises(ValueError, match=r"^wfkern.unlearn: margin must be a finite number >= 0, got -1$"):
        UnlearnConfig(margin=-1)


def test_a_vits_defaults_untrain_as_every_linear_layer_with_margin_4(digits_small):
    """patch + unlearn with no placement and no margin run exactly what gate_mlp="all", margin=4 run (the
    configuration the ViT sweep measured), and differ from the paper's placement with margin 3."""
    vit_model = create_model("vit_t", 10, 1, 8, depth=1, embed_dim=12, num_heads=2, patch_size=4).eval()
    run = dict(batch_size=32, max_epochs=1, max_steps=3, evals_per_epoch=1, progress=False)
    by_default, explicit, paper = (wfkern.patch(vit_model, 10, **kw) for kw in ({}, {"gate_mlp": "all"},
                                                                                  {"gate_mlp": "qkv"}))
    res = unlearn(by_default, *digits_small, **run)
    unlearn(explicit, *digits_small, margin=4.0, **run)
    unlearn(paper, *digits_small, margin=3.0, **run)
    assert res.config["margin"] == 4.0
    a, b = by_default.gates_state_dict(), explicit.gates_state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert len(paper.gates_state_dict()) < len(a)


def test_the_former_setting_name_alpha_init_still_works_for_one_release():
    with pytest.warns(DeprecationWarning, match=r"UnlearnConfig\.alpha_init is deprecated .* use gate_init"):
        config = UnlearnConfig(alpha_init=1.5)
    assert config.gate_init == 1.5 and config == UnlearnConfig(gate_init=1.5)
    with pytest.warns(DeprecationWarning, match="alpha_init is deprecated"):
        assert UnlearnConfig().replace(alpha_init=-2.0).gate_init == -2.0
    with pytest.raises(TypeError, match="gate_init must be given once, got both gate_init and its old name alpha_init"):
        UnlearnConfig(gate_init=1.0, alpha_init=2.0)
    # the flag's old spelling sets the same setting; a run saved under the old name resumes only with the same value
    assert unlearn_kwargs(parse("unlearn", "--alpha-init", "1.5"))["gate_init"] == 1.5
    assert UnlearnConfig(gate_init=1.5).resume_mismatch({"alpha_init": 1.5}) == []
    assert UnlearnConfig(gate_init=1.5).resume_mismatch({"alpha_init": 3.0}) == ["gate_init"]
