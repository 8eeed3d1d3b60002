"""Durations as people write them on a command line: 90s, 90m, 12h, 30d."""

from __future__ import annotations

import re

from core.errors import UserError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


class DurationError(UserError, ValueError):
    """A duration Atelier cannot read."""


def parse_duration(text: str, what: str) -> float:
    """Seconds in `text` (a positive number and one of s, m, h, d); `what` names the
    option in the error."""
    match = DURATION.match(text.strip())
    if match is None or float(match[1]) <= 0:
        raise DurationError(f"{what} must be a positive duration like 90s, 90m, 12h or 30d,"
                            f" got {text!r}")  # fmt: skip
    return float(match[1]) * UNITS[match[2]]


def format_duration(seconds: float) -> str:
    """`seconds` for a person: 45s, 12m 5s, 3h 2m, 2d 4h."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"
