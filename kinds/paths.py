"""Paths named in specs (datasets, corpora, weights files), looked at without trusting
them: whatever the system says of a path (too long, no permission, a loop of links)
becomes a one-line ValueError that names the path, shortened."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

SHOWN_CHARS = 80
"""Of a path in an error message: its start, then '...'."""


def shown(value: str) -> str:
    """`value` quoted for an error message, cut short if long."""
    text = value if len(value) <= SHOWN_CHARS else value[: SHOWN_CHARS - 3] + "..."
    return repr(text)


def kind_of(value: str, what: str) -> tuple[Path, Literal["directory", "file"] | None]:
    """`value` as an absolute path, and whether a directory or a file is there (None:
    nothing). ValueError when the path cannot even be looked at."""
    with readable(value, what):
        path = Path(value).expanduser().resolve()
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            return path, None
    if stat.S_ISDIR(mode):
        return path, "directory"
    return path, "file" if stat.S_ISREG(mode) else None


@contextmanager
def readable(value: str, what: str) -> Iterator[None]:
    """Turn an OSError met while reading `value` into a one-line ValueError."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{what} {shown(value)}: cannot be read ({reason})") from None


def listing(directory: Path, keep: Callable[[Path], bool], what: str) -> list[Path]:
    """The files under `directory` (recursively) that `keep`, in a stable order."""
    with readable(str(directory), what):
        return sorted(path for path in directory.rglob("*") if keep(path) and path.is_file())
