"""LiveKit signaling over WebSocket (``/rtc``) with token checks, plus ``/rtc/validate`` and the ``/rtc/v1`` 404.

A join (``/rtc?...``) admits a participant; a resume (``/rtc?...&reconnect=1&sid=PA_...&reconnect_reason=N``, as the
SDK's ``SignalClient::restart`` sends it) re-attaches one that is kept after its socket dropped. A socket that closes
without ``leave``, or from which nothing (not even ``ping_req``) came for ``ping_timeout`` (15 s), leaves the
participant kept for a resume until the departure timeout. See :mod:`kiosk_sandbox.resume` for what a resume does.
"""

from __future__ import annotations

import logging
import time
from typing import Literal, Protocol

import jwt
from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import models
from livekit.protocol import rtc as signal

from kiosk_sandbox.ids import new_sid
from kiosk_sandbox.peer import Peer
from kiosk_sandbox.resume import media_alive, refuse_resume
from kiosk_sandbox.rooms import Room, RoomRegistry
from kiosk_sandbox.sfu_rules import participant_kind

logger = logging.getLogger(__name__)

SERVER_VERSION = "1.9.0"
PING_INTERVAL_S = 5
PING_TIMEOUT_S = 15
Outcome = Literal["leave", "lost"]


class JoinGate(Protocol):
    """Consulted before a participant joins (e.g. to dispatch an agent for a self-minted token)."""

    def before_join(self, room: str, claims: Claims) -> None:
        """Called once the token is valid and before the participant is admitted."""


class Unauthorized(Exception):
    """The join request cannot be admitted; the message is the reason sent to the client."""


def server_info() -> models.ServerInfo:
    """What the sandbox says about itself in ``join`` and in a worker's ``register`` answer."""
    return models.ServerInfo(edition=models.ServerInfo.Standard, version=SERVER_VERSION, protocol=16, node_id="sandbox")


def bearer_claims(verifier: api.TokenVerifier, request: web.Request) -> Claims:
    """The verified claims of the request's ``Authorization: Bearer`` token; raises :class:`Unauthorized` if none."""
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    token = token or request.query.get("access_token", "")
    if not token:
        raise Unauthorized("no access token: send it as 'Authorization: Bearer <token>'")
    try:
        return verifier.verify(token)
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token is expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise Unauthorized("token signature is invalid (wrong API secret?)") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthorized("token was issued for another API key") from exc
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise Unauthorized(f"token is invalid: {type(exc).__name__}") from exc


class Signaling:
    """The room server's HTTP face: token checks, the signaling socket, and the join sequence."""

    def __init__(self, *, registry: RoomRegistry, api_key: str, api_secret: str, gate: JoinGate) -> None:
        """Serve rooms from ``registry``, accepting tokens signed with ``api_key``/``api_secret``."""
        self._registry = registry
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._gate = gate

    def add_routes(self, app: web.Application) -> None:
        """Register ``/rtc``, ``/rtc/v1`` and ``/rtc/validate`` on ``app``."""
        app.router.add_get("/rtc", self.rtc)
        app.router.add_get("/rtc/v1", self.rtc_v1)
        app.router.add_get("/rtc/validate", self.validate)
        app.router.add_get("/rtc/v1/validate", self.validate)

    def authorize(self, request: web.Request) -> Claims:
        """Return the claims of the request's token or raise :class:`Unauthorized` with the reason."""
        claims = bearer_claims(self._verifier, request)
        video = claims.video
        if video is None or not video.room_join:
            raise Unauthorized("token does not grant roomJoin")
        if not video.room:
            raise Unauthorized("token names no room")
        if not claims.identity:
            raise Unauthorized("token has no identity")
        if video.room in self._registry.closed_names:
            raise Unauthorized(f"room {video.room} has been closed")
        return claims

    async def rtc_v1(self, request: web.Request) -> web.Response:
        """Single-connection signaling is not offered: 404 makes the SDK fall back to ``/rtc``."""
        return web.Response(status=404, text="single peer connection mode is not supported")

    async def validate(self, request: web.Request) -> web.Response:
        """Tell the SDK why a join failed (it shows this body in its ``ConnectError``)."""
        try:
            self.authorize(request)
        except Unauthorized as exc:
            return web.Response(status=401, text=str(exc))
        return web.Response(text="success")

    async def rtc(self, request: web.Request) -> web.StreamResponse:
        """Run one participant's signaling session: a join, or a resume (``reconnect=1``)."""
        try:
            claims = self.authorize(request)
        except Unauthorized as exc:
            logger.info("join refused: %s", exc)
            return web.Response(status=401, text=str(exc))
        assert claims.video is not None
        if request.query.get("reconnect") in ("1", "true"):
            return await self._resume(request, claims)
        room_name = claims.video.room
        self._gate.before_join(room_name, claims)
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=8 * 1024 * 1024)
        await ws.prepare(request)
        room = self._registry.get_or_create(room_name)
        peer = Peer(room=room, info=_participant(claims), ws=ws)
        join = signal.JoinResponse(
            room=room.info(),
            participant=peer.info,
            other_participants=[p.info for p in room.peers.values() if p.identity != peer.identity],
            server_version=SERVER_VERSION,
            subscriber_primary=True,
            fast_publish=True,
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            server_info=server_info(),
        )
        await peer.send(signal.SignalResponse(join=join))
        logger.info("%s joined room %s as %s", peer.identity, room.name, peer.sid)
        await room.add(peer)
        await peer.start()
        await self._session(room, peer, ws)
        return ws

    async def _resume(self, request: web.Request, claims: Claims) -> web.WebSocketResponse:
        """Re-attach a kept participant to a new socket, or refuse so that the SDK rejoins afresh."""
        assert claims.video is not None
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=8 * 1024 * 1024)
        await ws.prepare(request)
        room = self._registry.rooms.get(claims.video.room)
        # livekit-server finds the participant by identity (RoomManager.StartSession), not by the sid it is sent
        peer = room.peers.get(claims.identity) if room is not None and not room.closed else None
        why = request.query.get("reconnect_reason", "0")
        if (
            room is None
            or peer is None
            or peer.closed
            or not peer.resumable
            or not media_alive(peer.publisher, peer.subscriber)
        ):
            state = "unknown" if peer is None or peer.closed else "without a working peer connection"
            logger.info("resume of %s (reason %s) refused: participant %s", claims.identity, why, state)
            await ws.send_bytes(refuse_resume().SerializeToString())
            await ws.close()
            return ws
        if "disconnect_signal_on_resume_no_messages" in peer.faults:
            peer.faults.discard("disconnect_signal_on_resume_no_messages")
            await ws.close()
            return ws
        old = peer.attach(ws)
        if old is not None:
            await old.close()
        logger.info("%s resumed in room %s as %s (reason %s)", peer.identity, room.name, peer.sid, why)
        reconnect = signal.ReconnectResponse(server_info=server_info(), last_message_seq=peer.last_reliable_seq)
        await peer.send(signal.SignalResponse(reconnect=reconnect))
        everyone = [p.info for p in room.peers.values()]
        await peer.send(signal.SignalResponse(update=signal.ParticipantUpdate(participants=everyone)))
        await peer.send(signal.SignalResponse(room_update=signal.RoomUpdate(room=room.info())))
        peer.renegotiate()
        if "disconnect_signal_on_resume" in peer.faults:
            peer.faults.discard("disconnect_signal_on_resume")
            await ws.close()
        await self._session(room, peer, ws)
        return ws

    async def _session(self, room: Room, peer: Peer, ws: web.WebSocketResponse) -> None:
        """Serve ``ws`` for ``peer`` of ``room``; then let it go (``leave``) or keep it for a resume (socket lost)."""
        outcome: Outcome = "lost"
        try:
            outcome = await self._serve(peer, ws)
        finally:
            if not peer.closed and peer.ws is ws:
                if outcome == "leave":
                    await room.depart(peer, models.DisconnectReason.CLIENT_INITIATED)
                else:
                    await ws.close()
                    room.keep(peer)

    async def _serve(self, peer: Peer, ws: web.WebSocketResponse) -> Outcome:
        while True:
            try:
                message = await ws.receive(timeout=PING_TIMEOUT_S)
            except TimeoutError:
                logger.info("no signal from %s for %d s (ping timeout)", peer.identity, PING_TIMEOUT_S)
                return "lost"
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return "lost"
            if message.type != WSMsgType.BINARY:
                if message.type == WSMsgType.ERROR:
                    logger.warning("signaling socket of %s failed: %s", peer.identity, ws.exception())
                    return "lost"
                continue
            request = signal.SignalRequest()
            try:
                request.ParseFromString(message.data)
            except DecodeError:
                logger.warning("unparsable signal from %s", peer.identity)
                continue
            if not await peer.handle(request):
                return "leave"


def _participant(claims: Claims) -> models.ParticipantInfo:
    video = claims.video or api.VideoGrants()
    kind = participant_kind(claims.kind or "", agent_grant=bool(video.agent))
    now = time.time()
    permission = models.ParticipantPermission(
        can_subscribe=video.can_subscribe is not False,
        can_publish=video.can_publish is not False,
        can_publish_data=video.can_publish_data is not False,
        can_update_metadata=video.can_update_own_metadata is not False,
        agent=kind == models.ParticipantInfo.Kind.AGENT,
        hidden=bool(video.hidden),
    )
    return models.ParticipantInfo(
        sid=new_sid("PA"),
        identity=claims.identity,
        name=claims.name,
        metadata=claims.metadata,
        attributes=claims.attributes or {},
        state=models.ParticipantInfo.State.JOINED,
        joined_at=int(now),
        joined_at_ms=int(now * 1000),
        kind=kind,
        permission=permission,
        version=1,
    )
