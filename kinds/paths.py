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


def check_remote_folder(
    value: str,
    context: object,
    keep: Callable[[str], bool],
    what: str,
    needs: str,
    max_bytes: int | None,
) -> str:
    """At submit, an object-store folder named for a dataset or corpus: it must list, hold
    a file that `keep` (by name; `needs` says which), and no kept file may exceed
    `max_bytes`. Its files are
    read by the worker, which checks them as it checks a local folder's."""
    from kinds.contract import Submission

    if not isinstance(context, Submission) or context.list_folder is None:
        raise ValueError(f"{what} {shown(value)}: an object-store folder cannot be checked here")
    files = [file for file in context.list_folder(value) if keep(file.name)]
    if not files:
        raise ValueError(f"{what} {shown(value)} holds no {needs}")
    if max_bytes is not None:
        for file in files:
            if file.bytes > max_bytes:
                raise ValueError(
                    f"{what} {shown(value)}: {file.name} is {file.bytes} bytes, more than "
                    f"{max_bytes}"
                )
    return value.rstrip("/")
