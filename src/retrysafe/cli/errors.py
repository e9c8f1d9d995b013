"""How a command fails: one ``retrysafe: error: …`` line on stderr and an exit status."""

from __future__ import annotations

__all__ = ["FAILURE", "USAGE_ERROR", "BadInput", "CliError"]

USAGE_ERROR = 2
"""Exit status for input the user must fix (bad flag, bad URL, unknown scope)."""

FAILURE = 1
"""Exit status for a valid request that could not be done (unknown key, database down)."""


class CliError(Exception):
    """A valid request that could not be done: one line on stderr, exit status 1."""

    exit_code = FAILURE


class BadInput(CliError):
    """Input the user must fix: one line on stderr, exit status 2, never a traceback."""

    exit_code = USAGE_ERROR
