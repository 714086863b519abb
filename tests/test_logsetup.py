"""Logging: journald's native protocol with structured fields under systemd, redaction of anything secret-shaped."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.daemon.logsetup import RedactFilter, fields, setup_logging

JOURNAL = Path("/run/systemd/journal/socket")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJraW9zayIsInZpZGVvIjp7fX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def journal_socket() -> Iterator[socket.socket]:
    """A datagram socket where journald's would be (only where no journald runs; needs root)."""
    if os.geteuid() != 0:
        pytest.skip("binding the journal socket path needs root")
    if JOURNAL.exists():
        pytest.skip("a journald socket exists here; not replacing it")
    created = not JOURNAL.parent.exists()
    JOURNAL.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(JOURNAL))
    sock.settimeout(5)
    try:
        yield sock
    finally:
        sock.close()
        JOURNAL.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                JOURNAL.parent.rmdir()


def test_journald_gets_structured_fields(journal_socket: socket.socket, restore_logging: None) -> None:
    """Under systemd (JOURNAL_STREAM set) a record reaches journald with KIOSK_* fields and no token."""
    setup_logging("info", environ={"JOURNAL_STREAM": "8:12345"})
    logging.getLogger("kiosk.test").info(
        "session %d live with token %s", 7, JWT, extra=fields(state="live", session=7, room="room-1", reason=None)
    )
    datagram = journal_socket.recv(65536).decode(errors="replace")
    assert "KIOSK_STATE=live" in datagram
    assert "KIOSK_SESSION=7" in datagram
    assert "KIOSK_ROOM=room-1" in datagram
    assert "KIOSK_REASON" not in datagram
    assert "SYSLOG_IDENTIFIER=kiosk" in datagram
    assert "session 7 live with token ***" in datagram
    assert JWT not in datagram


def test_redaction_masks_tokens_keys_and_known_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """JWTs, key-shaped words and configured secrets are masked in the message; other text is kept."""
    logger = logging.getLogger("kiosk.redact")
    redact = RedactFilter(["hunter2-secret-value"])
    logger.addFilter(redact)
    try:
        with caplog.at_level(logging.INFO, logger="kiosk.redact"):
            logger.info(
                "token %s key %s and %s in room %s", JWT, "sk_live_abcdefghijklmnop", "hunter2-secret-value", "r1"
            )
    finally:
        logger.removeFilter(redact)
    assert caplog.messages == ["token *** key *** and *** in room r1"]


def test_tracebacks_are_masked_too(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    """An exception whose text quotes a token or the configured key is masked in the printed traceback."""
    setup_logging("info", environ={}, secrets=["plain-secret-1234"])
    try:
        raise RuntimeError(f"request failed: access_token={JWT} key=plain-secret-1234")
    except RuntimeError:
        logging.getLogger("kiosk.test").exception("broker call failed")
    err = capsys.readouterr().err
    assert "broker call failed" in err and "RuntimeError: request failed" in err
    assert JWT not in err and "plain-secret-1234" not in err
