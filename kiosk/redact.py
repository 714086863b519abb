"""The one redaction: what must never reach a log line, an error message or ``check-config`` output.

:func:`redact` masks the given secret values, also in the forms an error message may quote them in (``repr``, JSON,
percent-encoded, each line of a multi-line value), anything shaped like a LiveKit JWT, a bearer token, an API key
(``sk-``, ``lk_``, ``API...``) or a ``key=...``/``token: ...`` pair, and the user info of URLs
(``https://user:password@host`` becomes ``https://***@host``).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
#: ``key: value`` / ``key=value`` / ``Bearer value``: whatever follows is masked.
_PAIR = re.compile(
    r"(?i)\b(x-api-key|api[_-]?key|token|secret|password)(\s*[:=]\s*)[^\s,;'\"]+|\b(bearer)(\s+)[^\s,;'\"]+"
)
#: ``token value`` / ``secret value``: the next word is masked only when it looks like a credential (8 or more
#: characters with a digit), so that "the token expires in 900 s" stays readable.
_SPACED = re.compile(r"(?i)\b(x-api-key|api[_-]?key|token|secret|password)(\s+)(?=[^\s,;'\"]*\d)[^\s,;'\"]{8,}")
_KEYLIKE = re.compile(r"\b(sk|pk|rk|lk|API)[_-]?[A-Za-z0-9][A-Za-z0-9_-]{11,}")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
#: Config keys (and other field names) whose values are secrets: their values are never shown.
SENSITIVE_KEY = re.compile(r"key|secret|token|password|passwd|authorization|credential|cookie", re.IGNORECASE)


def is_sensitive_key(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (``api_key``, ``x-api-key``, ``password``, ``cookie``, ...)."""
    return SENSITIVE_KEY.search(name) is not None


def mask_userinfo(text: str) -> str:
    """``text`` with the user info of every URL in it masked: ``https://user:pw@host/x`` -> ``https://***@host/x``."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def forms(secret: str) -> set[str]:
    """``secret`` as it may appear quoted in a message: plain, ``repr``, JSON, percent-encoded, line by line."""
    found = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], urllib.parse.quote(secret, safe="")}
    found.update(line.strip() for line in secret.splitlines())
    return {f for f in found if len(f) >= 4}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask secrets (and their quoted forms), token- and key-shaped words and URL user info in ``text``."""
    for secret in sorted({f for s in secrets if s for f in forms(s)}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _JWT.sub(MASK, text)
    text = _PAIR.sub(lambda m: f"{m.group(1) or m.group(3)}{m.group(2) or m.group(4)}{MASK}", text)
    text = _SPACED.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _KEYLIKE.sub(MASK, text)
    return mask_userinfo(text)
