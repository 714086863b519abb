"""Session records: one per broker start, closed by the broker, the last human leaving, or a time limit.

The last human leaving ends the session only when it is really gone: at once when it was removed after the
departure timeout (its signal and media vanished, ``CONNECTION_TIMEOUT``), and ``rejoin_grace_s`` after any other
leave, because the SDK's full reconnect first sends ``leave`` (``CLIENT_INITIATED``) and then joins afresh; a human
joining the room within the grace keeps the session. (livekit-server keeps an empty room for its
``departure_timeout``, 20 s, before closing it.) A participant kept for a resume is still in the room.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from livekit.protocol import models

if TYPE_CHECKING:
    from kiosk_sandbox.peer import Peer
    from kiosk_sandbox.rooms import Room, RoomRegistry

logger = logging.getLogger(__name__)

#: Seconds a session waits for a human to come back after the last one left (the SDK's full reconnect rejoins).
REJOIN_GRACE_S = 3.0


@dataclass
class Heard:
    """What the scripted agent received during a session."""

    greeted: bool = False
    speech_seconds: float = 0.0
    turns: int = 0
    preconnect_seconds: float = 0.0
    preconnect_sample_rate: int = 0
    preconnect_channels: int = 0
    preconnect_mime_type: str = ""
    preconnect_track_id: str = ""
    #: Why a pre-connect buffer was not used (never came, came too slowly or too early, undecodable).
    preconnect_rejected: str = ""
    wav_path: str = ""
    fingerprint: str = ""
    user_texts: list[str] = field(default_factory=list)
    #: ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process on the machine) when the first audible live
    #: microphone frame arrived, and when a pre-connect buffer began to arrive; for latency benchmarks.
    first_audio_at: float | None = None
    preconnect_at: float | None = None
    #: ``time.monotonic()`` when the agent began waiting for a pre-connect buffer (it subscribed to the microphone).
    preconnect_wait_from: float | None = None
    #: The live microphone stream as received (first ``LIVE_RECORD_S`` seconds, 16 kHz), silence included.
    live_wav_path: str = ""
    live_seconds: float = 0.0


@dataclass
class SessionRecord:
    """One session as ``GET /sandbox/sessions`` reports it."""

    id: str
    dialect: str
    identity: str
    room: str
    agent_name: str
    overrides: dict[str, Any]
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    end_reason: str | None = None
    #: When (``time.time()``) the broker's end call for this session first arrived, whether or not the session had
    #: already ended otherwise (its room emptied): a vendor bills until it hears that call.
    broker_ended_at: float | None = None
    humans_joined: int = 0
    heard: Heard = field(default_factory=Heard)
    #: With ``--agent workers``: the agent job (``id``, ``worker_id``, ``participant_identity``, ``status``, ...).
    agent_job: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the record as plain JSON-able data."""
        return asdict(self)


Dispatcher = Callable[[SessionRecord], None]


class SessionManager:
    """Creates sessions, dispatches the agent, and ends sessions when their room should close."""

    def __init__(
        self,
        *,
        registry: RoomRegistry,
        dispatch: Dispatcher,
        before_close: Callable[[str], Awaitable[None]] | None = None,
        rejoin_grace_s: float = REJOIN_GRACE_S,
    ) -> None:
        """Track sessions of rooms in ``registry``; ``dispatch`` sends the scripted agent into a new one.

        ``before_close(room)`` runs before a session's room is closed (the agent leaves tidily).
        """
        self._registry = registry
        self._dispatch = dispatch
        self._before_close = before_close
        self._rejoin_grace_s = rejoin_grace_s
        self.records: dict[str, SessionRecord] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending_ends: dict[str, asyncio.TimerHandle] = {}

    def by_room(self, room: str) -> SessionRecord | None:
        """Return the session of room ``room``, if any."""
        return self.records.get(room)

    def start(
        self, *, dialect: str, identity: str, room: str, agent_name: str, overrides: dict[str, Any]
    ) -> SessionRecord:
        """Create a session for ``room`` and dispatch the agent into it."""
        record = SessionRecord(
            id=f"SE_{secrets.token_hex(6)}",
            dialect=dialect,
            identity=identity,
            room=room,
            agent_name=agent_name,
            overrides=overrides,
        )
        self.records[room] = record
        logger.info("session %s (%s) started in room %s", record.id, dialect, room)
        self._dispatch(record)
        return record

    async def end(
        self, room: str, reason: str, *, disconnect: models.DisconnectReason = models.DisconnectReason.ROOM_DELETED
    ) -> SessionRecord | None:
        """End the session of ``room``: stamp it and disconnect everyone with ``leave{disconnect}``; return it."""
        record = self.records.get(room)
        if record is None:
            return None
        if (pending := self._pending_ends.pop(room, None)) is not None:
            pending.cancel()
        if record.ended_at is None:
            record.ended_at = time.time()
            record.end_reason = reason
            logger.info("session %s ended: %s", record.id, reason)
        if self._before_close is not None:
            await self._before_close(room)
        await self._registry.close_room(room, disconnect)
        return record

    async def end_all(self, reason: str) -> None:
        """End every open session with ``reason``; everyone gets ``leave{SERVER_SHUTDOWN}`` (server shutdown)."""
        open_rooms = [r.room for r in self.records.values() if r.ended_at is None]
        shutdown = models.DisconnectReason.SERVER_SHUTDOWN
        await asyncio.gather(*(self.end(room, reason, disconnect=shutdown) for room in open_rooms))

    def participant_joined(self, room: str, is_agent: bool) -> None:
        """Count a human joining ``room``; it keeps a session whose last human just left."""
        record = self.records.get(room)
        if record is not None and not is_agent:
            record.humans_joined += 1
            if (pending := self._pending_ends.pop(room, None)) is not None:
                pending.cancel()
                logger.info("a human came back to room %s: session %s goes on", room, record.id)

    def participant_left(self, room: Room, peer: Peer) -> None:
        """End the session once the last human has left its room (after the rejoin grace unless it timed out)."""
        record = self.records.get(room.name)
        if record is None or record.ended_at is not None or room.humans():
            return
        if peer.info.kind == models.ParticipantInfo.Kind.AGENT or room.name in self._pending_ends:
            return
        if peer.info.disconnect_reason == models.DisconnectReason.CONNECTION_TIMEOUT:
            self._end_soon(room.name)
            return
        loop = asyncio.get_running_loop()
        self._pending_ends[room.name] = loop.call_later(self._rejoin_grace_s, self._end_soon, room.name)

    def _end_soon(self, room: str) -> None:
        self._pending_ends.pop(room, None)
        live = self._registry.rooms.get(room)
        if live is not None and live.humans():
            return
        task = asyncio.create_task(self._end_quietly(room, "last_participant_left"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_quietly(self, room: str, reason: str) -> None:
        await self.end(room, reason)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every session, oldest first, as JSON-able data."""
        return [r.to_json() for r in sorted(self.records.values(), key=lambda r: r.started_at)]
