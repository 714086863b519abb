"""Test-wide configuration: fixture plugins shared by every test module."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.sandbox",
    "tests.fixtures.audio",
    "tests.fixtures.daemon",
    "tests.fixtures.real_agent",
    "tests.fixtures.faultbroker",
    "tests.fixtures.ring",
]
