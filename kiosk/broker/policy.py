"""Rules every dialect shares: which URLs are safe to send a key to, and scrubbing secrets out of messages."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from kiosk.errors import ConfigError
from kiosk.redact import redact

SECURE_SCHEMES = frozenset({"https", "wss"})
PLAIN_SCHEMES = frozenset({"http", "ws"})
MESSAGE_LIMIT = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_url_problem(url: str) -> str | None:
    """Why ``url`` must not carry a key or token (plain text to a remote host), or None when it is fine."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in SECURE_SCHEMES:
        return None if parts.hostname else f"{url_for_log(url)} has no host"
    if scheme in PLAIN_SCHEMES:
        if is_loopback_host(parts.hostname):
            return None
        secure = "https" if scheme == "http" else "wss"
        return f"{url_for_log(url)} is not encrypted: use {secure}:// (plain {scheme}:// is allowed only on loopback)"
    return f"{url_for_log(url)} has an unsupported scheme {scheme!r}"


def require_secure_url(url: str, *, key: str) -> str:
    """Return ``url`` if it is https/wss or on loopback; otherwise raise :class:`ConfigError` naming ``key``."""
    problem = insecure_url_problem(url)
    if problem is not None:
        raise ConfigError(f"{key}: {problem}")
    return url


def url_for_log(url: str) -> str:
    """The URL without user info, query or fragment (where a misplaced key could hide), for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def scrub(text: str, *, secrets: Iterable[str] = (), limit: int = MESSAGE_LIMIT) -> str:
    """Make broker-supplied text safe to log: :func:`kiosk.redact.redact`, flattened to one line, truncated."""
    text = _CONTROL.sub(" ", redact(text, secrets)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text
