"""The one error type of the local stack: a message that says what went wrong and what to do."""

from __future__ import annotations


class StackError(RuntimeError):
    """A stack operation failed; the message names the cause and the fix."""
