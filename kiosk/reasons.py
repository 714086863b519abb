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
    #: The room's connection was lost for longer than ``session.network_lost_s`` (the SDK could not resume).
    NETWORK_LOST = "network_lost"
    #: The server removed the kiosk because another participant joined with the same identity (a second kiosk
    #: with the same ``broker.identity``); LiveKit's ``DisconnectReason.DUPLICATE_IDENTITY``.
    DUPLICATE_IDENTITY = "duplicate_identity"
    #: The server closed the room before the agent spoke (``SERVER_SHUTDOWN``, ``PARTICIPANT_REMOVED``,
    #: ``ROOM_CLOSED``, ``ROOM_DELETED`` before any word of the agent...).
    ROOM_CLOSED = "room_closed"
    #: The state directory (``daemon.state_dir``) cannot be written: read-only or full.
    STATE_DIR = "state_dir"
    #: The broker's host name does not resolve (DNS down or a wrong ``broker.url``).
    BROKER_UNRESOLVABLE = "broker_unresolvable"


class EndReason(enum.StrEnum):
    """Why a session that was live (or connecting) ended."""

    SILENCE = "silence"
    MAX_DURATION = "max_duration"
    BUTTON = "button"
    CONTROL = "control"
    AGENT_LEFT = "agent_left"
    #: The agent ended the call: the room was deleted (livekit-agents' ``EndCallTool``) after the agent spoke.
    AGENT_ENDED = "agent_ended"
    DISCONNECTED = "disconnected"
    SHUTDOWN = "shutdown"
    FAILURE = "failure"
    WAKE_GUARD = "wake_guard"
