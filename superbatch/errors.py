"""Errors the user can act on.

A SuperbatchError's message is printed as one line, without a traceback
(unless --debug), so it must say what is wrong and, where it can, what to do.
"""


class SuperbatchError(Exception):
    """A problem with the user's input, settings or environment."""

    exit_code = 1


class UsageError(SuperbatchError):
    """A bad command-line flag (exit code 2, as argparse uses)."""

    exit_code = 2
