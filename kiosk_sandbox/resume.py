"""How the sandbox keeps a participant through a dropped signal connection, as livekit-server does, and where not.

What livekit-server does (``pkg/service/roommanager.go`` ``StartSession``, ``pkg/rtc/room.go`` ``ResumeParticipant``,
``pkg/rtc/participant.go`` ``ICERestart`` / ``HandleSignalSourceClose`` / ``onAnyTransportFailed``) and the sandbox
with it:

- **Signal resume.** A client whose signaling socket drops without ``leave`` is kept. The SDK comes back on
  ``/rtc?...&reconnect=1&sid=PA_...`` (and ``reconnect_reason``, a ``livekit_models.ReconnectReason``); the server
  finds the participant by identity, swaps in the new socket and answers ``reconnect`` (``ReconnectResponse`` with
  ``server_info`` and ``last_message_seq``, the last reliable ``DataPacket.sequence`` it received from the client,
  so the SDK resends only what was lost), then a ``ParticipantUpdate`` of everyone (the participant included) and a
  ``RoomUpdate``. The participant keeps its sid, its publications and its subscriptions; nobody else sees it leave.
- **ICE restart.** The SDK then re-offers its publisher connection with new ICE credentials (``iceRestart``). aiortc
  (1.16) has no ICE restart: its ICE agent (aioice) keeps its own credentials and never re-runs its checks. The
  sandbox answers the offer and makes aioice accept the client's new credentials (:func:`adopt_remote_ice`), so the
  client's new connectivity checks succeed and it may switch to a new candidate pair; the sandbox's own credentials
  stay. On the subscriber side livekit-server sends an ICE-restart offer; the sandbox sends a plain re-offer (same
  credentials). This rides through a drop of the signal only, and a media outage shorter than aioice's consent
  expiry (about 30 s: 6 missed checks 5 s apart), after which the client's ICE recovers on the old pair.
- **When a resume cannot work** (the participant is unknown or was removed, or its peer connection has failed,
  which aiortc cannot restart), the sandbox refuses as livekit-server refuses a resume of a closed or missing
  participant: ``leave{reason: STATE_MISMATCH, action: RECONNECT, can_reconnect: true}`` on the new socket, then
  closes it. The SDK goes straight to its full reconnect (a fresh join, then it republishes its tracks). A peer
  connection of a kept participant that fails gets the same ``leave`` at once (livekit-server sends
  ``leave{action: RESUME}`` and restarts ICE; the sandbox cannot restart, so it asks for the full reconnect).
- **Full reconnect.** A fresh join of an identity that is still in the room replaces the old participant: the old
  one is removed with ``DUPLICATE_IDENTITY`` (its ``leave`` if its socket is still up), the others see it leave and
  the new one join with its new tracks.
- **Departure.** A participant whose signal is gone (socket closed, or silent past ``ping_timeout``, 15 s) and that
  does not resume within the departure timeout is removed with ``CONNECTION_TIMEOUT``; the others see it leave.
  livekit-server removes it 5 s (``disconnectCleanupDuration``) after its peer connection failed, which pion decides
  after 10 s + 5 s without ICE traffic (``iceDisconnectedTimeout`` + ``iceFailedTimeout``): 20 s after a client
  vanished. The sandbox counts from the moment it notices the signal is gone, 20 s by default.

Not done: single peer connection mode (``/rtc/v1`` answers 404), regions and migration between nodes, the
server's own ICE-restart offer on the subscriber, replaying reliable data the server sent while the client was
away (the SDK's ``SyncState`` is read for nothing).
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription
from livekit.protocol import models
from livekit.protocol import rtc as signal

logger = logging.getLogger(__name__)

#: livekit-server's ``disconnectCleanupDuration`` (5 s) after pion's ICE failure (10 s + 5 s): ``pkg/rtc``.
DEFAULT_DEPARTURE_TIMEOUT_S = 20.0
IceCredentials = tuple[str, str]
Action = signal.LeaveRequest.Action


def leave(reason: models.DisconnectReason, action: Action = signal.LeaveRequest.DISCONNECT) -> signal.SignalResponse:
    """A ``leave`` as livekit-server sends it to protocol >= 13 clients (``sendLeaveRequest``).

    ``can_reconnect`` is also set for ``RECONNECT``, as the server does for older clients.
    """
    request = signal.LeaveRequest(reason=reason, action=action, can_reconnect=action == signal.LeaveRequest.RECONNECT)
    return signal.SignalResponse(leave=request)


def refuse_resume() -> signal.SignalResponse:
    """The server's answer to a resume it cannot do: ``leave{STATE_MISMATCH, RECONNECT}`` (a full reconnect)."""
    return leave(models.DisconnectReason.STATE_MISMATCH, signal.LeaveRequest.RECONNECT)


def ice_credentials(sdp: str) -> IceCredentials | None:
    """The ``(ice-ufrag, ice-pwd)`` of the first media section of ``sdp``, or None if it has none."""
    for media in SessionDescription.parse(sdp).media:
        if media.ice is not None and media.ice.usernameFragment and media.ice.password:
            return media.ice.usernameFragment, media.ice.password
    return None


def adopt_remote_ice(pc: RTCPeerConnection, credentials: IceCredentials) -> int:
    """Make ``pc``'s ICE agents accept the remote side's restarted credentials; return how many were updated.

    aioice authenticates incoming checks against the remote username fragment it learned first and signs its own
    checks with the remote password; after the remote side restarted ICE both must be the new ones. The agents
    themselves, their candidate pairs and their own credentials are kept (aiortc cannot gather anew).
    """
    updated = 0
    transports = [t.receiver.transport for t in pc.getTransceivers() if t.receiver.transport is not None]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    seen: set[int] = set()
    for dtls in transports:
        connection = dtls.transport._connection
        if id(connection) in seen:
            continue
        seen.add(id(connection))
        connection.remote_username, connection.remote_password = credentials
        updated += 1
    return updated


def media_alive(*pcs: RTCPeerConnection) -> bool:
    """Whether none of ``pcs`` has failed or closed (aiortc cannot restart one that has)."""
    return all(pc.connectionState not in ("failed", "closed") for pc in pcs)
