"""A failure that repeats is one warning with its traceback, then debug lines, then one line when it recovers."""

from __future__ import annotations

import logging

import pytest

from kiosk.repeat import RepeatedFailure


def test_one_warning_per_run_of_failures(caplog: pytest.LogCaptureFixture) -> None:
    """Five failures: one WARNING (with traceback), four DEBUG; a success says how many; the next run warns again."""
    caplog.set_level(logging.DEBUG)
    policy = RepeatedFailure(logging.getLogger("test.repeat"), "frame processing")
    for _ in range(5):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            policy.failed()
    policy.succeeded()
    policy.succeeded()
    try:
        raise RuntimeError("again")
    except RuntimeError:
        policy.failed()
    levels = [r.levelname for r in caplog.records]
    assert levels == ["WARNING", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "INFO", "WARNING"]
    assert caplog.records[0].exc_info is not None
    assert "after 5 failures" in caplog.records[5].getMessage()
