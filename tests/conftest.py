"""Test-wide configuration: fixture plugins shared by every test module."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kiosk.audio.streams import open_stream_count

pytest_plugins = [
    "tests.fixtures.sandbox",
    "tests.fixtures.audio",
    "tests.fixtures.daemon",
    "tests.fixtures.real_agent",
    "tests.fixtures.faultbroker",
    "tests.fixtures.ring",
    "tests.fixtures.netlink",
]


@pytest.fixture(autouse=True)
def no_portaudio_stream_left_open() -> Iterator[None]:
    """Every PortAudio stream a test opens in this process is closed by its end (an unclosed one is a bug)."""
    before = open_stream_count()
    yield
    gc.collect()
    left = open_stream_count() - before
    assert left <= 0, f"{left} PortAudio stream(s) left open: close the engine or stream the test opened"
