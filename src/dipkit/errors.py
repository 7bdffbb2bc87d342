"""Errors that dipkit reports to users as one line (CLI exit code 2)."""

from __future__ import annotations

__all__ = ["DipkitError"]


class DipkitError(Exception):
    """A user-facing error: bad input, unknown name, unreadable file.

    The CLI prints ``dipkit: error: <message>`` on one line and exits with code 2.
    Raise it with a message that says what is wrong and, where possible, what to do.
    """
