"""The command line's error types: a leaf module, so command modules need not import ``wfkern.cli.main``."""

from __future__ import annotations

__all__ = ["UserError", "USER_ERRORS"]


class UserError(Exception):
    """A mistake in how the command was called; printed as one line, exit status 2."""


# Exceptions that mean "the user asked for something impossible", never a bug: one line, no traceback.
USER_ERRORS = (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
