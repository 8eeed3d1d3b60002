"""Notifications: when a job with `--notify URL` reaches a final status, a signed JSON POST
to each URL (the delivery is added by the notifier; this module checks URLs at submit)."""

from __future__ import annotations

from urllib.parse import urlsplit

from core.errors import UserError

MAX_URL_CHARS = 2000


class WebhookError(UserError, ValueError):
    """A notification URL Atelier cannot use."""


def check_webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_CHARS:
        raise WebhookError(f"--notify takes an http:// or https:// URL, got {url!r}")
    return url
