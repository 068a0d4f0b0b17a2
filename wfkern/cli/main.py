"""The ``wfkern`` command: the subcommands listed in ``COMMANDS``, one ``wfkern/cli/cmd_<name>.py`` module each."""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import sys
from types import ModuleType
from typing import Sequence

from wfkern.cli.errors import USER_ERRORS, UserError

__all__ = ["main", "build_parser", "COMMANDS", "load_commands", "UserError", "USER_ERRORS", "DefaultsHelpFormatter"]

# Every subcommand, in the order ``wfkern --help`` lists them: ``wfkern.cli.cmd_<name>`` provides
# ``add_parser(subparsers)`` and ``run(args) -> int``. A new command module is added here (a test checks that
# every cmd_*.py file is listed).
COMMANDS = ("baseline", "demo", "evaluate", "export", "import", "info", "registry", "report", "serve", "train", "unlearn")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default: "(default: X)" is appended unless the help already says it.

    Options whose default is None say in their own words what happens without them ("default: from
    the checkpoint"); flags (store_true) and required options have none to show.
    """

    @staticmethod
    def _adds_default(action: argparse.Action) -> bool:
        return not ("default" in (action.help or "").lower() or action.default is None
                    or action.default is argparse.SUPPRESS or action.required or action.nargs == 0
                    or not action.option_strings)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not self._adds_default(action):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._adds_default(action):  # argparse prints no help line for help=None
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class _Parser(argparse.ArgumentParser):
    """The parser of ``wfkern`` and of every subcommand (sub-parsers take the class of their parent)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def load_commands() -> list[tuple[str, ModuleType]]:
    """(name, module) for every command of ``COMMANDS``, in that order.

    A command module that fails to import fails here, with its own error: a broken install or a missing
    dependency is a traceback, never a subcommand that silently disappears.
    """
    return [(name, importlib.import_module(f"wfkern.cli.cmd_{name}")) for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command of ``COMMANDS``."""
    parser = _Parser(
        prog="wfkern", description="Class-level machine unlearning by weight filtering (WF-Net).")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _, module in load_commands():
        module.add_parser(sub)
    return parser


def _is_user_error(e: BaseException) -> bool:
    if isinstance(e, USER_ERRORS):
        return True
    # wfkern raises RuntimeError("wfkern...: ...; <fix>") for a missing piece of the environment.
    return isinstance(e, RuntimeError) and str(e).startswith("wfkern")


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("wfkern: interrupted", file=sys.stderr)
        return 130
    except FloatingPointError as e:  # a run that diverged: a failure (exit 1), said in one line
        if args.traceback:
            raise
        print(f"wfkern {args.command}: failed: {_first_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - turned into one line for user mistakes only
        if args.traceback or not _is_user_error(e):
            raise
        print(f"wfkern {args.command}: error: {_first_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover - `python -m wfkern.cli.main`
    sys.exit(main())
