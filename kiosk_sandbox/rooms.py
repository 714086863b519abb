r"""Rooms of the sandbox's selective forwarding unit: who is in, what they publish, who hears what.

A participant leaves a room for one of livekit-server's ``DisconnectReason``\ s, which the others read in its final
``ParticipantInfo`` (``disconnect_reason``, state ``DISCONNECTED``): ``CLIENT_INITIATED`` (its ``leave``),
``DUPLICATE_IDENTITY`` (the same identity joined afresh), ``CONNECTION_TIMEOUT`` (its signal vanished and it did not
resume within the departure timeout; see :mod:`kiosk_sandbox.resume`), ``ROOM_DELETED`` / ``SERVER_SHUTDOWN`` /
``PARTICIPANT_REMOVED`` (the room was closed, or the RoomService removed it), and what ``SimulateScenario`` asks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as signal

from kiosk_sandbox.ids import new_sid
from kiosk_sandbox.resume import DEFAULT_DEPARTURE_TIMEOUT_S, leave
from kiosk_sandbox.sfu_rules import Sender, route_data

if TYPE_CHECKING:
    from kiosk_sandbox.peer import Peer

logger = logging.getLogger(__name__)


class RoomObserver(Protocol):
    """Told when participants come and go, so sessions can follow their rooms."""

    def participant_left(self, room: Room, peer: Peer) -> None:
        """Called after ``peer`` left ``room`` (the room may now be empty)."""


class Room:
    """One LiveKit room: its participants, their published tracks, and the relay that fans audio out."""

    def __init__(
        self,
        name: str,
        *,
        observer: RoomObserver | None = None,
        departure_timeout_s: float = DEFAULT_DEPARTURE_TIMEOUT_S,
        on_empty: Callable[[Room], None] | None = None,
    ) -> None:
        """Create an empty room called ``name``; a vanished participant goes after ``departure_timeout_s``."""
        self.name = name
        self.sid = new_sid("RM")
        self.created_at = time.time()
        self.peers: dict[str, Peer] = {}
        self.relay = MediaRelay()
        self.tracks: dict[str, tuple[Peer, MediaStreamTrack]] = {}
        self.closed = False
        self.departure_timeout_s = departure_timeout_s
        self._observer = observer
        self._on_empty = on_empty
        self._tasks: set[asyncio.Task[None]] = set()

    def info(self) -> models.Room:
        """Return the room as the protocol describes it."""
        return models.Room(
            sid=self.sid,
            name=self.name,
            creation_time=int(self.created_at),
            creation_time_ms=int(self.created_at * 1000),
            num_participants=len(self.peers),
            empty_timeout=30,
            departure_timeout=max(1, round(self.departure_timeout_s)),
        )

    def others(self, peer: Peer) -> list[Peer]:
        """Every participant but ``peer``."""
        return [p for p in self.peers.values() if p is not peer]

    def humans(self) -> list[Peer]:
        """The participants that are not agents."""
        return [p for p in self.peers.values() if p.info.kind != models.ParticipantInfo.Kind.AGENT]

    async def add(self, peer: Peer) -> None:
        """Admit ``peer``: replace a namesake (``DUPLICATE_IDENTITY``), announce it, give it everyone's tracks."""
        old = self.peers.get(peer.identity)
        self.peers[peer.identity] = peer
        if old is not None:
            logger.info(
                "%s joined room %s again: its earlier session %s is replaced", peer.identity, self.name, old.sid
            )
            await self.depart(old, models.DisconnectReason.DUPLICATE_IDENTITY, send_leave=True)
        await self.broadcast([peer.info], exclude=peer)
        for track_sid, (owner, track) in self.tracks.items():
            peer.subscribe(owner, track_sid, self.relay.subscribe(track, buffered=False))

    async def depart(self, peer: Peer, reason: models.DisconnectReason, *, send_leave: bool = False) -> None:
        """Close ``peer`` (with ``leave{reason}`` if ``send_leave``) and remove it for ``reason``."""
        await peer.close(reason if send_leave else None)
        await self.remove(peer, reason)

    async def remove(self, peer: Peer, reason: models.DisconnectReason) -> None:
        """Forget ``peer`` after it left for ``reason``, drop its tracks, and tell the others."""
        if peer.info.state == models.ParticipantInfo.State.DISCONNECTED:
            return
        if self.peers.get(peer.identity) is peer:
            del self.peers[peer.identity]
        for track_sid in [sid for sid, (owner, _) in self.tracks.items() if owner is peer]:
            del self.tracks[track_sid]
            for other in self.peers.values():
                other.unsubscribe(track_sid)
        peer.info.state = models.ParticipantInfo.State.DISCONNECTED
        peer.info.disconnect_reason = reason
        await self.broadcast([peer.info], exclude=self.peers.get(peer.identity))
        reason_name = models.DisconnectReason.Name(reason)
        logger.info("%s left room %s (%s; %d remain)", peer.identity, self.name, reason_name, len(self.peers))
        if self._observer is not None:
            self._observer.participant_left(self, peer)
        if not self.peers and self._on_empty is not None:
            self._on_empty(self)

    def keep(self, peer: Peer) -> None:
        """Keep ``peer``, whose signal is gone, for a resume; remove it after the departure timeout."""
        if peer.closed:
            return
        peer.detach()
        logger.info(
            "%s lost its signal in room %s; kept %.1f s for a resume",
            peer.identity,
            self.name,
            self.departure_timeout_s,
        )
        loop = asyncio.get_running_loop()
        peer.departure = loop.call_later(self.departure_timeout_s, self._spawn_departure, peer)

    def _spawn_departure(self, peer: Peer) -> None:
        peer.departure = None
        if peer.closed or peer.ws is not None:
            return
        task = asyncio.create_task(self.depart(peer, models.DisconnectReason.CONNECTION_TIMEOUT))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def simulate(self, peer: Peer, scenario: signal.SimulateScenario) -> None:
        """Act on ``SimulateScenario`` as livekit-server's ``Room.onSimulateScenario`` does (the parts that apply)."""
        which = scenario.WhichOneof("scenario")
        logger.info("%s simulates %s", peer.identity, which)
        if which in ("node_failure", "migration"):
            # dropped without a leave: the client's resume finds nobody and goes to a full reconnect
            reason = (
                models.DisconnectReason.MIGRATION if which == "migration" else models.DisconnectReason.SERVER_SHUTDOWN
            )
            await self.depart(peer, reason)
        elif which == "server_leave":
            await self.depart(peer, models.DisconnectReason.SERVER_SHUTDOWN, send_leave=True)
        elif which in ("disconnect_signal_on_resume", "disconnect_signal_on_resume_no_messages"):
            peer.faults.add(which)
        elif which == "leave_request_full_reconnect":
            await peer.send(leave(models.DisconnectReason.UNKNOWN_REASON, signal.LeaveRequest.RECONNECT))

    async def publish(self, peer: Peer, info: models.TrackInfo, track: MediaStreamTrack) -> None:
        """Make ``peer``'s new ``track`` known to everyone and forward it to the others."""
        self.tracks[info.sid] = (peer, track)
        await self.broadcast([peer.info], exclude=peer)
        for other in self.others(peer):
            other.subscribe(peer, info.sid, self.relay.subscribe(track, buffered=False))

    async def broadcast(self, infos: Iterable[models.ParticipantInfo], *, exclude: Peer | None = None) -> None:
        """Send a ``ParticipantUpdate`` with ``infos`` to every participant but ``exclude``."""
        update = signal.SignalResponse(update=signal.ParticipantUpdate(participants=list(infos)))
        targets = [p for p in self.peers.values() if p is not exclude]
        await asyncio.gather(*(p.send(update) for p in targets))

    def forward_data(self, sender: Peer, label: str, payload: bytes) -> None:
        """Forward a ``DataPacket`` from ``sender`` on the channel of the same label, as livekit-server routes it."""
        packet = models.DataPacket()
        try:
            packet.ParseFromString(payload)
        except DecodeError:
            logger.warning("dropping an unparsable data packet from %s", sender.identity)
            return
        kind = models.DataPacket.LOSSY if label == "_lossy" else models.DataPacket.RELIABLE
        if kind == models.DataPacket.RELIABLE and packet.sequence:
            sender.last_reliable_seq = packet.sequence
        is_agent = sender.info.kind == models.ParticipantInfo.Kind.AGENT
        who = Sender(identity=sender.identity, sid=sender.sid, is_agent=is_agent, hidden=sender.info.permission.hidden)
        delivery = route_data(who, packet, kind)
        if delivery is None:
            return
        for other in self.others(sender):
            if delivery.reaches(other.identity, other.sid):
                other.send_data(label, delivery.data)

    async def close(self, reason: models.DisconnectReason) -> None:
        """Disconnect everyone with a ``leave`` carrying ``reason`` (those without a signal just go)."""
        self.closed = True
        peers = list(self.peers.values())
        await asyncio.gather(*(p.close(reason) for p in peers))
        for peer in peers:
            await self.remove(peer, reason)


class RoomRegistry:
    """Every open room by name; a room exists while someone is in it."""

    def __init__(self, *, departure_timeout_s: float = DEFAULT_DEPARTURE_TIMEOUT_S) -> None:
        """Start with no rooms; their participants are kept ``departure_timeout_s`` after their signal is gone."""
        self.rooms: dict[str, Room] = {}
        self.closed_names: set[str] = set()
        self.observer: RoomObserver | None = None
        self.departure_timeout_s = departure_timeout_s

    def get_or_create(self, name: str) -> Room:
        """Return the open room called ``name``, creating it if needed."""
        room = self.rooms.get(name)
        if room is None or room.closed:
            room = Room(
                name,
                observer=self.observer,
                departure_timeout_s=self.departure_timeout_s,
                on_empty=self.discard_if_empty,
            )
            self.rooms[name] = room
            logger.info("room %s opened (%s)", name, room.sid)
        return room

    def discard_if_empty(self, room: Room) -> None:
        """Drop ``room`` once its last participant is gone."""
        if not room.peers and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            room.closed = True
            logger.info("room %s closed", room.name)

    async def close_room(self, name: str, reason: models.DisconnectReason) -> bool:
        """Close room ``name`` for everyone; return whether it was open."""
        self.closed_names.add(name)
        room = self.rooms.get(name)
        if room is None:
            return False
        await room.close(reason)
        return True

    async def close_all(self) -> None:
        """Close every room (server shutdown)."""
        await asyncio.gather(*(self.close_room(n, models.DisconnectReason.SERVER_SHUTDOWN) for n in list(self.rooms)))
