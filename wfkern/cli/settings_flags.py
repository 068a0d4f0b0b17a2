"""Command-line flags made from a settings dataclass (UnlearnConfig, EvalSettings): each default is written there, once."""

from __future__ import annotations

import argparse
import dataclasses
import typing


__all__ = ["NONE_WORDS", "add_settings_flags", "settings_given"]

# --- flags made from a settings dataclass (UnlearnConfig, EvalSettings): each default is written there, once ----

# Words that set a setting to None on the command line where None is a choice (``--clip-norm none``: no clipping).
NONE_WORDS = ("none", "off")


def _flag_fields(cls) -> list:
    """The fields of ``cls`` that are flags: all but those marked ``metadata={"flag": False}``."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", True)]


def _none_or(number: type):
    """The text of a flag whose setting may be None: 'none' / 'off' -> None, else ``number`` (text that is no number
    stays text, for the setting's own check to refuse with its rule)."""
    def convert(text):
        if not isinstance(text, str):  # already converted by argparse (``_number_or_none_word``)
            return text
        if text.strip().lower() in NONE_WORDS:
            return None
        try:
            return number(text)
        except ValueError:
            return text
    return convert


def _number_or_none_word(number: type):
    """argparse's converter for a setting whose default is None: a number, or a none word kept as text (for
    ``settings_given`` to turn into None: argparse's None means "not given")."""
    as_number = _none_or(number)
    return lambda text: text if text.strip().lower() in NONE_WORDS else as_number(text)


def _flag_type(cls, f: dataclasses.Field, hints: dict) -> tuple:
    """(what argparse converts the flag's text with, what ``settings_given`` converts the parsed value with or None).

    From the field's type. ``metadata["parse"]`` (a comma list, ...) runs in ``settings_given``, so the parsed
    flags keep the text as typed; so does an Optional number whose default is not None (None is a choice, e.g.
    no clipping): 'none' or 'off' sets it. An Optional number whose default is None (λ1 resolved per model, no
    clipping) parses as a number, and 'none' / 'off' give the default explicitly (after a --recipe that sets one).
    """
    hint = hints[f.name]
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    if "parse" in f.metadata:
        return str, f.metadata["parse"]
    if len(kinds) != 1 or kinds[0] not in (int, float, str):
        raise TypeError(f"wfkern.cli: {cls.__name__}.{f.name} must be an int, float or str setting (or give "
                        f"metadata 'parse'), got {hint}")
    if type(None) in typing.get_args(hint):
        if f.default is None:
            return _number_or_none_word(kinds[0]), _none_or(kinds[0])
        return str, _none_or(kinds[0])
    return kinds[0], None


def _shown(f: dataclasses.Field, value) -> str:
    """A setting's value as --help says it: None in the field's own words (``metadata["none"]``)."""
    return f.metadata.get("none", "none") if value is None else str(value)


def add_settings_flags(group, cls, also: tuple[str, dict] | None = None) -> None:
    """One flag per field of the settings dataclass ``cls`` (``clip_norm`` -> ``--clip-norm``).

    Type, choices, metavar and help come from the field (``metadata``: ``help``, ``choices``, ``metavar``,
    ``none`` for what None means, ``parse``), "(default: X)" from its default; ``also`` = (where, values):
    another set of defaults, shown beside it where it differs, e.g. ("--recipe paper", PAPER_RECIPE).
    argparse's own default is None, "not given": ``settings_given`` reads the flags given, the dataclass
    keeps the rest.
    """
    hints = typing.get_type_hints(cls)
    for f in _flag_fields(cls):
        convert = _flag_type(cls, f, hints)[0]
        none_word = type(None) in typing.get_args(hints[f.name])  # 'none' is a choice
        text = f.metadata["help"] + (f"; 'none': {f.metadata['none']}" if none_word else "")
        default = f"default: {_shown(f, f.default)}"
        if also is not None and f.name in also[1] and also[1][f.name] != f.default:
            default += f"; {also[0]}: {_shown(f, also[1][f.name])}"
        names = ["--" + f.name.replace("_", "-")]
        if "old_name" in f.metadata:  # the former name still works for one release
            names.append("--" + f.metadata["old_name"].replace("_", "-"))
            default += f"; {names[1]}: its old name, deprecated"
        group.add_argument(*names, dest=f.name, type=convert, choices=f.metadata.get("choices"),
                           default=None, metavar=f.metadata.get("metavar"),
                           help=f"{text} ({default})".replace("%", "%%"))


def settings_given(args: argparse.Namespace, cls) -> dict:
    """The settings of ``cls`` whose flags were given: {field name: value}, the text converted where the flag
    keeps it (``metadata["parse"]``; 'none' or 'off' for None where None is a choice)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in _flag_fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            convert = _flag_type(cls, f, hints)[1]
            out[f.name] = convert(value) if convert is not None else value
    return out
