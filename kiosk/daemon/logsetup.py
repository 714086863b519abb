"""Logging: journald with structured fields under systemd, plain lines on a terminal; never a secret.

Under systemd (``$JOURNAL_STREAM`` set) records go to the journal with fields ``KIOSK_STATE``, ``KIOSK_SESSION``,
``KIOSK_ROOM`` and ``KIOSK_REASON`` taken from the record's ``extra``. Timestamps are left to journald.
A redaction filter masks anything shaped like a JWT or an API key that reaches a log line by accident.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from kiosk.redact import redact

FIELDS = ("state", "session", "room", "reason")


class RedactFilter(logging.Filter):
    """Masks tokens and key-shaped strings in the formatted message, as a last line of defence."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = secrets if secrets is not None else []

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets masked; always keeps the record."""
        message = record.getMessage()
        masked = redact(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter whose tracebacks are masked too (an exception's text may quote a request or a token)."""

    def __init__(self, fmt: str, datefmt: str | None = None, *, secrets: list[str]) -> None:
        super().__init__(fmt, datefmt)
        self._secrets = secrets

    def formatException(self, ei: Any) -> str:
        """The traceback, masked."""
        return redact(super().formatException(ei), self._secrets)


class _JournalFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                record.__dict__[f"KIOSK_{name.upper()}"] = str(value)
        return True


def setup_logging(level: str, *, environ: Mapping[str, str] | None = None, secrets: list[str] | None = None) -> None:
    """Configure the root logger once for the daemon."""
    env = os.environ if environ is None else environ
    known = list(secrets or [])
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if env.get("JOURNAL_STREAM") and _journal_available():
        from systemd.journal import JournalHandler

        journal: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="kiosk")
        journal.addFilter(_JournalFields())
        journal.setFormatter(RedactingFormatter("%(name)s: %(message)s", secrets=known))
        handler = journal
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S", secrets=known)
        )
    handler.addFilter(RedactFilter(known))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that log request URLs or SDP at INFO stay at WARNING.
    for noisy in ("httpx", "httpcore", "aiortc", "aioice", "livekit", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _journal_available() -> bool:
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return False
    return True


def fields(**values: Any) -> dict[str, Any]:
    """Build the ``extra`` dict for a log call with the journal fields this module knows."""
    return {key: value for key, value in values.items() if key in FIELDS and value is not None}
