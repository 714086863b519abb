"""How a room that closed for good ends the session: the SDK's ``DisconnectReason`` mapped to a named end.

The ``rtc.Room`` event ``disconnected`` passes livekit-protocol's ``DisconnectReason`` (``livekit_models.proto``),
either as the server sent it in a ``LeaveRequest`` or, when the SDK gave up reconnecting, the reason that started the
reconnect (livekit rust-sdks ``RtcEngine::reconnection_needed`` keeps it for the close).

=========================================================  ==================================================
DisconnectReason                                           session end
=========================================================  ==================================================
ROOM_DELETED after the agent spoke                         ``agent_ended`` (RoomService ``DeleteRoom``, as
                                                           livekit-agents' ``EndCallTool`` does): an orderly
                                                           end, the goodbye plays out, normal LED
ROOM_DELETED before the agent spoke, SERVER_SHUTDOWN,      failure ``room_closed``
PARTICIPANT_REMOVED, ROOM_CLOSED, AGENT_ERROR, the SIP
ones (USER_UNAVAILABLE, USER_REJECTED, SIP_TRUNK_FAILURE),
and any number this SDK does not name
DUPLICATE_IDENTITY                                         failure ``duplicate_identity`` (a second kiosk with
                                                           the same ``device.identity`` joined the room)
SIGNAL_CLOSE, CONNECTION_TIMEOUT, JOIN_FAILURE,            failure ``network_lost``: the link failed and the
MEDIA_FAILURE, STATE_MISMATCH, MIGRATION, UNKNOWN_REASON   SDK's reconnect attempts did not bring it back
CLIENT_INITIATED                                           ``disconnected`` (the kiosk left itself; a session
                                                           that is leaving reports nothing, so not expected)
=========================================================  ==================================================
"""

from __future__ import annotations

from livekit import rtc

from kiosk.reasons import FailureReason
from kiosk.session import AgentEnded, Disconnected, Event, Failure

_REASON = rtc.DisconnectReason
#: Reasons that mean the server (or a person through its API) closed the session on purpose.
CLOSED_REASONS = frozenset(
    {
        _REASON.SERVER_SHUTDOWN,
        _REASON.PARTICIPANT_REMOVED,
        _REASON.ROOM_CLOSED,
        _REASON.ROOM_DELETED,
        _REASON.USER_UNAVAILABLE,
        _REASON.USER_REJECTED,
        _REASON.SIP_TRUNK_FAILURE,
        _REASON.AGENT_ERROR,
    }
)
#: Reasons that mean the link failed and the SDK could not resume or rejoin.
LINK_REASONS = frozenset(
    {
        _REASON.UNKNOWN_REASON,
        _REASON.SIGNAL_CLOSE,
        _REASON.CONNECTION_TIMEOUT,
        _REASON.JOIN_FAILURE,
        _REASON.MEDIA_FAILURE,
        _REASON.STATE_MISMATCH,
        _REASON.MIGRATION,
    }
)


def reason_name(reason: int) -> str:
    """The protobuf name of a ``DisconnectReason`` (``ROOM_DELETED``), or ``reason <n>`` for a newer number."""
    try:
        return _REASON.Name(reason)  # type: ignore[arg-type]
    except ValueError:
        return f"reason {reason}"


def end_for(reason: int, *, agent_spoke: bool) -> Event:
    """The session event for a room that disconnected with ``reason`` (see the table in the module docstring)."""
    if reason == _REASON.ROOM_DELETED and agent_spoke:
        return AgentEnded()
    if reason == _REASON.DUPLICATE_IDENTITY:
        return Failure(FailureReason.DUPLICATE_IDENTITY)
    if reason in LINK_REASONS:
        return Failure(FailureReason.NETWORK_LOST)
    if reason == _REASON.CLIENT_INITIATED:
        return Disconnected()
    return Failure(FailureReason.ROOM_CLOSED)  # CLOSED_REASONS, and numbers newer than this SDK
