"""Named reasons: why a session ended and why something failed.

These values are a public vocabulary: they appear in logs, in ``kiosk status``, on the LEDs (each failure has its own
blink count) and in the broker's session records.
"""

from __future__ import annotations

import enum


class FailureReason(enum.StrEnum):
    """Why a session could not start or had to stop abnormally."""

    BROKER_UNREACHABLE = "broker_unreachable"
    BROKER_TIMEOUT = "broker_timeout"
    BROKER_UNAUTHORIZED = "broker_unauthorized"
    BROKER_REJECTED = "broker_rejected"
    BROKER_ERROR = "broker_error"
    BROKER_MALFORMED = "broker_malformed"
    CLOCK = "clock"
    CONNECT_FAILED = "connect_failed"
    CONNECT_TIMEOUT = "connect_timeout"
    AGENT_NO_SHOW = "agent_no_show"
    FIRST_WORDS_TIMEOUT = "first_words_timeout"
    UPLINK_TIMEOUT = "uplink_timeout"
    AUDIO_DEVICE = "audio_device"
    SECRET_UNREADABLE = "secret_unreadable"
    INTERNAL = "internal"


class EndReason(enum.StrEnum):
    """Why a session that was live (or connecting) ended."""

    SILENCE = "silence"
    MAX_DURATION = "max_duration"
    BUTTON = "button"
    CONTROL = "control"
    AGENT_LEFT = "agent_left"
    DISCONNECTED = "disconnected"
    SHUTDOWN = "shutdown"
    FAILURE = "failure"
    WAKE_GUARD = "wake_guard"
