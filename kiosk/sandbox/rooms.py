"""Rooms of the sandbox's selective forwarding unit: who is in, what they publish, who hears what."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as signal

from kiosk.sandbox.ids import new_sid
from kiosk.sandbox.sfu_rules import Sender, route_data

if TYPE_CHECKING:
    from kiosk.sandbox.peer import Peer

logger = logging.getLogger(__name__)


class RoomObserver(Protocol):
    """Told when participants come and go, so sessions can follow their rooms."""

    def participant_left(self, room: Room, peer: Peer) -> None:
        """Called after ``peer`` left ``room`` (the room may now be empty)."""


class Room:
    """One LiveKit room: its participants, their published tracks, and the relay that fans audio out."""

    def __init__(self, name: str, *, observer: RoomObserver | None = None) -> None:
        """Create an empty room called ``name``."""
        self.name = name
        self.sid = new_sid("RM")
        self.created_at = time.time()
        self.peers: dict[str, Peer] = {}
        self.relay = MediaRelay()
        self.tracks: dict[str, tuple[Peer, MediaStreamTrack]] = {}
        self.closed = False
        self._observer = observer

    def info(self) -> models.Room:
        """Return the room as the protocol describes it."""
        return models.Room(
            sid=self.sid,
            name=self.name,
            creation_time=int(self.created_at),
            creation_time_ms=int(self.created_at * 1000),
            num_participants=len(self.peers),
            empty_timeout=30,
            departure_timeout=5,
        )

    def others(self, peer: Peer) -> list[Peer]:
        """Every participant but ``peer``."""
        return [p for p in self.peers.values() if p is not peer]

    def humans(self) -> list[Peer]:
        """The participants that are not agents."""
        return [p for p in self.peers.values() if p.info.kind != models.ParticipantInfo.Kind.AGENT]

    async def add(self, peer: Peer) -> None:
        """Admit ``peer``: replace a namesake, announce it, and give it everyone's tracks."""
        old = self.peers.get(peer.identity)
        if old is not None:
            await old.close(models.DisconnectReason.DUPLICATE_IDENTITY)
        self.peers[peer.identity] = peer
        await self.broadcast([peer.info], exclude=peer)
        for track_sid, (owner, track) in self.tracks.items():
            peer.subscribe(owner, track_sid, self.relay.subscribe(track, buffered=False))

    async def remove(self, peer: Peer) -> None:
        """Forget ``peer`` after it left, tell the others, and drop its tracks."""
        if self.peers.get(peer.identity) is not peer:
            return
        del self.peers[peer.identity]
        for track_sid in [sid for sid, (owner, _) in self.tracks.items() if owner is peer]:
            del self.tracks[track_sid]
            for other in self.peers.values():
                other.unsubscribe(track_sid)
        peer.info.state = models.ParticipantInfo.State.DISCONNECTED
        await self.broadcast([peer.info])
        logger.info("%s left room %s (%d remain)", peer.identity, self.name, len(self.peers))
        if self._observer is not None:
            self._observer.participant_left(self, peer)

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
        is_agent = sender.info.kind == models.ParticipantInfo.Kind.AGENT
        who = Sender(identity=sender.identity, sid=sender.sid, is_agent=is_agent, hidden=sender.info.permission.hidden)
        delivery = route_data(who, packet, kind)
        if delivery is None:
            return
        for other in self.others(sender):
            if delivery.reaches(other.identity, other.sid):
                other.send_data(label, delivery.data)

    async def close(self, reason: models.DisconnectReason) -> None:
        """Disconnect everyone with a ``leave`` carrying ``reason``."""
        self.closed = True
        await asyncio.gather(*(p.close(reason) for p in list(self.peers.values())))


class RoomRegistry:
    """Every open room by name; a room exists while someone is in it."""

    def __init__(self) -> None:
        """Start with no rooms."""
        self.rooms: dict[str, Room] = {}
        self.closed_names: set[str] = set()
        self.observer: RoomObserver | None = None

    def get_or_create(self, name: str) -> Room:
        """Return the open room called ``name``, creating it if needed."""
        room = self.rooms.get(name)
        if room is None or room.closed:
            room = Room(name, observer=self.observer)
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
