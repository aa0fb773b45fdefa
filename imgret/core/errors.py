"""Errors that are the user's to fix: the CLI prints them without a traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Something the user can fix (a missing folder, no images, a mismatched model).

    The message says what was wrong and what to do; the CLI prints it and exits with code 2.
    """
