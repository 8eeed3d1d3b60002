"""Who a job is for: the owner that fair share counts (default: the submitting OS user)."""

from __future__ import annotations

import getpass

from core.errors import UserError

MAX_OWNER_CHARS = 255


class OwnerError(UserError, ValueError):
    """An owner name Atelier cannot record."""


def default_owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "unknown"


def check_owner(owner: str) -> str:
    name = owner.strip()
    if not name or len(name) > MAX_OWNER_CHARS or not name.isprintable():
        raise OwnerError(f"--owner must be 1 to {MAX_OWNER_CHARS} printable characters, "
                         f"got {owner!r}")  # fmt: skip
    return name
