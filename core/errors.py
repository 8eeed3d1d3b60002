"""Errors as people read them: one line, never a traceback. Every package may use this
module (it has no imports); job kinds use `one_line` for their JobError messages."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 500


class UserError(Exception):
    """Something the user asked for or configured cannot be done; the message, one line,
    says what is wrong. The CLI prints it and exits with code 2."""


def one_line(error: BaseException, limit: int = MAX_MESSAGE_CHARS, *, typed: bool = True) -> str:
    """The error's message on one line (white space folded), at most `limit` characters,
    after its type's name when `typed` (or when the message is empty)."""
    text = " ".join(str(error).split())
    if typed or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


DETAIL_CHARS = 300


def detail(error: BaseException, limit: int = DETAIL_CHARS) -> str:
    """A library's error as a short clause inside a message of our own."""
    return one_line(error, limit, typed=False)
