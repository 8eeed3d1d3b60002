"""Notifications on the wire: the URLs `--notify` takes, the signed JSON body, one POST.

A notice is a POST of compact JSON with sorted keys (so that the signature covers exactly
the bytes sent) and these headers:

    Content-Type: application/json
    X-Atelier-Event: job.finished
    X-Atelier-Delivery: <job id>            the same on every retry: receivers de-duplicate
    X-Atelier-Signature: sha256=<hex>       HMAC-SHA256 of the body, keyed by
                                            ATELIER_WEBHOOK_SECRET (GitHub's format)

Any 2xx answer delivers it. Redirects are not followed (a 3xx is a failed try): urllib
would turn the POST into a GET without its body. The retries, claims and events are the
notifier's (scheduler/notifier.py).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from core.errors import UserError, detail
from core.settings import Settings, load_settings

MAX_URL_CHARS = 2000
EVENT = "job.finished"
SIGNATURE_HEADER = "X-Atelier-Signature"
MAX_ERROR_CHARS = 200


class WebhookError(UserError, ValueError):
    """A notification URL Atelier cannot use."""


def check_webhook_url(url: str, settings: Settings | None = None) -> str:
    """`url` if a notice can go there: http(s), and a secret to sign it with is set."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_CHARS:
        raise WebhookError(f"--notify takes an http:// or https:// URL, got {url!r}")
    if not (settings or load_settings()).webhook_secret:
        raise WebhookError(
            "--notify needs ATELIER_WEBHOOK_SECRET set (in the scheduler's environment too):"
            " notices are signed with it"
        )
    return url


def encode(body: dict[str, Any]) -> bytes:
    """The bytes sent and signed: compact JSON, keys sorted."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(body: bytes, secret: str) -> str:
    """The X-Atelier-Signature value of `body`: `sha256=` and the HMAC's hex digest."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str, secret: str) -> bool:
    """What a receiver does (in constant time): does `header` sign `body` with `secret`?"""
    return hmac.compare_digest(signature(body, secret), header)


@dataclass(frozen=True)
class Answer:
    """How one try went: delivered, or why not."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx comes back as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(url: str, body: bytes, secret: str, delivery: str, timeout: float) -> Answer:
    """One try at delivering `body` to `url`, waiting `timeout` seconds at most (to
    connect, and for each read); never raises for the receiver's faults."""
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", "atelier-notifier")
    request.add_header("X-Atelier-Event", EVENT)
    request.add_header("X-Atelier-Delivery", delivery)
    request.add_header(SIGNATURE_HEADER, signature(body, secret))
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            code = int(response.status)
    except urllib.error.HTTPError as error:
        code = int(error.code)
        error.close()
    except (OSError, ValueError, http.client.HTTPException) as error:  # refused, timed out…
        return Answer(False, error=detail(error, MAX_ERROR_CHARS))
    if 200 <= code < 300:
        return Answer(True, status_code=code)
    return Answer(False, status_code=code, error=f"HTTP {code}")
