"""The disconnect reasons the SDK passes, mapped to named session ends (a table over the SDK's own enum)."""

from __future__ import annotations

import pytest
from livekit import rtc

from kiosk.daemon.roomends import CLOSED_REASONS, LINK_REASONS, end_for, reason_name
from kiosk.reasons import FailureReason
from kiosk.session import AgentEnded, Disconnected, Event, Failure

R = rtc.DisconnectReason
LOST = Failure(FailureReason.NETWORK_LOST)
CLOSED = Failure(FailureReason.ROOM_CLOSED)

TABLE: list[tuple[int, bool, Event]] = [
    (R.ROOM_DELETED, True, AgentEnded()),
    (R.ROOM_DELETED, False, CLOSED),
    (R.DUPLICATE_IDENTITY, True, Failure(FailureReason.DUPLICATE_IDENTITY)),
    (R.DUPLICATE_IDENTITY, False, Failure(FailureReason.DUPLICATE_IDENTITY)),
    (R.SERVER_SHUTDOWN, True, CLOSED),
    (R.PARTICIPANT_REMOVED, True, CLOSED),
    (R.ROOM_CLOSED, True, CLOSED),
    (R.AGENT_ERROR, True, CLOSED),
    (R.USER_REJECTED, False, CLOSED),
    (R.SIGNAL_CLOSE, True, LOST),
    (R.CONNECTION_TIMEOUT, True, LOST),
    (R.JOIN_FAILURE, False, LOST),
    (R.MEDIA_FAILURE, True, LOST),
    (R.STATE_MISMATCH, True, LOST),
    (R.MIGRATION, True, LOST),
    (R.UNKNOWN_REASON, True, LOST),
    (R.CLIENT_INITIATED, True, Disconnected()),
    (999, True, CLOSED),
]


@pytest.mark.parametrize(("reason", "spoke", "expected"), TABLE, ids=lambda v: repr(v))
def test_disconnect_reasons_map_to_named_ends(reason: int, spoke: bool, expected: Event) -> None:
    """Each reason (and whether the agent had spoken) gives the end in the table."""
    assert end_for(reason, agent_spoke=spoke) == expected


def test_every_reason_the_sdk_names_is_classified() -> None:
    """Every DisconnectReason of the installed SDK is a closed room, a failed link, or one of the named ones."""
    named = {R.ROOM_DELETED, R.DUPLICATE_IDENTITY, R.CLIENT_INITIATED}
    assert set(R.values()) <= CLOSED_REASONS | LINK_REASONS | named
    assert not CLOSED_REASONS & LINK_REASONS


def test_reasons_are_logged_by_their_protobuf_name() -> None:
    """The log names the reason as livekit-protocol does; a number this SDK does not know is still shown."""
    assert reason_name(R.ROOM_DELETED) == "ROOM_DELETED"
    assert reason_name(999) == "reason 999"
