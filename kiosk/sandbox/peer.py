"""One participant's signaling socket and its two aiortc peer connections (publisher and subscriber)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from livekit.protocol import models
from livekit.protocol import rtc as signal

from kiosk.sandbox.sfu_rules import track_info

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack, RTCDataChannel, RTCRtpSender

    from kiosk.sandbox.rooms import Room

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 10.0
_PUBLISHER = signal.SignalTarget.PUBLISHER
_State = models.ParticipantInfo.State


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class Peer:
    """A participant: answers its publisher offers, offers it everyone else's tracks, relays its data."""

    def __init__(self, *, room: Room, info: models.ParticipantInfo, ws: web.WebSocketResponse) -> None:
        """Wrap the participant ``info`` joined to ``room`` over the signaling socket ``ws``."""
        self.room = room
        self.info = info
        self.ws = ws
        self.closed = False
        self.publisher = _pc()
        self.subscriber = _pc()
        self._channels: dict[str, RTCDataChannel] = {
            "_reliable": self.subscriber.createDataChannel("_reliable", ordered=True),
            "_lossy": self.subscriber.createDataChannel("_lossy", ordered=False, maxRetransmits=0),
        }
        self._early: list[tuple[str, bytes]] = []
        self._pending_tracks: dict[str, models.TrackInfo] = {}
        self._senders: dict[str, RTCRtpSender] = {}
        self._relayed: dict[str, MediaStreamTrack] = {}
        self._to_confirm: list[tuple[Peer, str]] = []
        self._candidates: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
        self._answer: asyncio.Future[RTCSessionDescription] | None = None
        self._offer_wanted = False
        self._offer_task: asyncio.Task[None] | None = None
        self._offer_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._channels["_reliable"].on("open", self._flush_early)
        self.publisher.on("track", self._on_track)
        self.publisher.on("datachannel", self._on_datachannel)
        for pc in (self.publisher, self.subscriber):
            pc.on("connectionstatechange", self._on_connection_state)

    @property
    def identity(self) -> str:
        """The participant's identity."""
        return self.info.identity

    @property
    def sid(self) -> str:
        """The participant's sid (``PA_...``)."""
        return self.info.sid

    async def send(self, response: signal.SignalResponse) -> None:
        """Send one signaling message, unless the socket is already closing."""
        if self.ws.closed:
            return
        try:
            await self.ws.send_bytes(response.SerializeToString())
        except ConnectionError as exc:
            logger.debug("signal to %s lost: %s", self.identity, exc)

    def send_data(self, label: str, data: bytes) -> None:
        """Send a serialized ``DataPacket`` on the subscriber data channel ``label``."""
        channel = self._channels.get(label, self._channels["_reliable"])
        if channel.readyState == "open":
            channel.send(data)
        elif channel.readyState == "connecting" and len(self._early) < 256:
            self._early.append((channel.label, data))

    def _flush_early(self) -> None:
        early, self._early = self._early, []
        for label, data in early:
            self.send_data(label, data)

    async def start(self) -> None:
        """Make the first subscriber offer (data channels plus everyone's tracks)."""
        self.request_offer()

    def subscribe(self, owner: Peer, track_sid: str, track: MediaStreamTrack) -> None:
        """Forward ``track`` (a relay of ``owner``'s track ``track_sid``) to this participant."""
        if self.closed or track_sid in self._senders:
            # Joining and publishing can interleave (a join awaits its broadcast while another peer publishes):
            # a second subscription to the same track would put a duplicate msid into the SDP, which the SDK rejects.
            track.stop()
            return
        # the SDK finds the publication from the msid: "<participant sid>|<track sid> <track sid>"
        track._id = track_sid
        sender = self.subscriber.addTrack(track)
        sender._stream_id = f"{owner.sid}|{track_sid}"
        self._senders[track_sid] = sender
        self._relayed[track_sid] = track
        self._to_confirm.append((owner, track_sid))
        self.request_offer()

    def unsubscribe(self, track_sid: str) -> None:
        """Stop forwarding track ``track_sid`` to this participant."""
        sender = self._senders.pop(track_sid, None)
        track = self._relayed.pop(track_sid, None)
        if track is not None:
            track.stop()
        if sender is None or self.closed:
            return
        for transceiver in self.subscriber.getTransceivers():
            if transceiver.sender is sender:
                sender.replaceTrack(None)
                transceiver.direction = "inactive"
        self.request_offer()

    def request_offer(self) -> None:
        """Ask for a (re)negotiation of the subscriber connection; offers never overlap."""
        self._offer_wanted = True
        if self._offer_task is None or self._offer_task.done():
            self._offer_task = asyncio.create_task(self._offer_loop())

    async def _offer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._offer_wanted and not self.closed:
            self._offer_wanted = False
            try:
                await self.subscriber.setLocalDescription(await self.subscriber.createOffer())
                self._offer_id += 1
                self._answer = loop.create_future()
                sdp = self.subscriber.localDescription.sdp
                await self.send(signal.SignalResponse(offer=_description("offer", sdp, self._offer_id)))
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    answer = await self._answer
                await self.subscriber.setRemoteDescription(answer)
                await self._flush_candidates(1)
                await self._confirm_subscriptions()
            except InvalidStateError as exc:
                logger.debug("subscriber renegotiation for %s raced a close: %s", self.identity, exc)
                return
            except TimeoutError:
                logger.warning("%s did not answer the subscriber offer in time", self.identity)
                return

    async def _confirm_subscriptions(self) -> None:
        """Tell each publisher that this participant now receives its track, as LiveKit does (``track_subscribed``).

        Clients wait for it: a pre-connect audio buffer is sent once the agent really subscribes to the microphone.
        """
        confirmed, self._to_confirm = self._to_confirm, []
        for owner, track_sid in confirmed:
            if not owner.closed and track_sid in self._senders:
                await owner.send(signal.SignalResponse(track_subscribed=signal.TrackSubscribed(track_sid=track_sid)))

    async def handle(self, request: signal.SignalRequest) -> bool:
        """Act on one signaling request; return False once the participant has left."""
        kind = request.WhichOneof("message")
        if kind == "offer":
            await self._answer_publisher(request.offer)
        elif kind == "answer":
            if self._answer is not None and not self._answer.done():
                self._answer.set_result(RTCSessionDescription(sdp=request.answer.sdp, type="answer"))
        elif kind == "trickle":
            await self._trickle(request.trickle)
        elif kind == "add_track":
            await self._add_track(request.add_track)
        elif kind == "mute":
            await self._mute(request.mute)
        elif kind == "update_metadata":
            await self._update_metadata(request.update_metadata)
        elif kind == "ping":
            await self.send(signal.SignalResponse(pong=int(time.time() * 1000)))
        elif kind == "ping_req":
            pong = signal.Pong(last_ping_timestamp=request.ping_req.timestamp, timestamp=int(time.time() * 1000))
            await self.send(signal.SignalResponse(pong_resp=pong))
        elif kind == "leave":
            logger.info("%s asked to leave (%s)", self.identity, request.leave.reason)
            return False
        else:
            logger.debug("ignoring %s from %s", kind, self.identity)
        return True

    async def _answer_publisher(self, offer: signal.SessionDescription) -> None:
        await self.publisher.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        await self._flush_candidates(0)
        await self.publisher.setLocalDescription(await self.publisher.createAnswer())
        sdp = self.publisher.localDescription.sdp
        await self.send(signal.SignalResponse(answer=_description("answer", sdp, offer.id)))

    async def _trickle(self, trickle: signal.TrickleRequest) -> None:
        init = json.loads(trickle.candidateInit or "{}")
        if not init.get("candidate"):
            return
        target = 0 if trickle.target == _PUBLISHER else 1
        self._candidates[target].append(init)
        pc = self.publisher if target == 0 else self.subscriber
        if pc.remoteDescription is not None:
            await self._flush_candidates(target)

    async def _flush_candidates(self, target: int) -> None:
        pc = self.publisher if target == 0 else self.subscriber
        pending, self._candidates[target] = self._candidates[target], []
        for init in pending:
            candidate = candidate_from_sdp(str(init["candidate"]).removeprefix("candidate:"))
            candidate.sdpMid = init.get("sdpMid")
            candidate.sdpMLineIndex = init.get("sdpMLineIndex")
            await pc.addIceCandidate(candidate)

    async def _add_track(self, request: signal.AddTrackRequest) -> None:
        info = track_info(request)
        self._pending_tracks[request.cid] = info
        await self.send(
            signal.SignalResponse(track_published=signal.TrackPublishedResponse(cid=request.cid, track=info))
        )

    def _on_track(self, track: MediaStreamTrack) -> None:
        info = self._pending_tracks.pop(track.id, None)
        if info is None and self._pending_tracks:
            # fall back to the oldest announced track when the msid does not carry the client id
            info = self._pending_tracks.pop(next(iter(self._pending_tracks)))
        if info is None:
            logger.warning("%s sent a track it never announced; ignoring it", self.identity)
            return
        self.info.tracks.append(info)
        self.info.is_publisher = True
        self.info.version += 1
        logger.info("%s published %s (%s)", self.identity, info.sid, info.name)
        self._spawn(self._drain(track))
        self._spawn(self.room.publish(self, info, track))

    async def _drain(self, track: MediaStreamTrack) -> None:
        """Keep one reader on the relay so the incoming track never piles up frames."""
        sink = self.room.relay.subscribe(track, buffered=False)
        try:
            while not self.closed:
                await sink.recv()
        except MediaStreamError as exc:
            logger.debug("track of %s ended: %r", self.identity, exc)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        label = channel.label

        def on_message(message: bytes | str) -> None:
            if isinstance(message, bytes):
                self.room.forward_data(self, label, message)

        channel.on("message", on_message)

    async def _mute(self, request: signal.MuteTrackRequest) -> None:
        for track in self.info.tracks:
            if track.sid == request.sid:
                track.muted = request.muted
        self.info.version += 1
        await self.room.broadcast([self.info], exclude=self)

    async def _update_metadata(self, request: signal.UpdateParticipantMetadata) -> None:
        if request.metadata:
            self.info.metadata = request.metadata
        if request.name:
            self.info.name = request.name
        for key, value in request.attributes.items():
            if value:
                self.info.attributes[key] = value
            elif key in self.info.attributes:
                del self.info.attributes[key]
        self.info.version += 1
        await self.room.broadcast([self.info])
        if request.request_id:
            ok = signal.RequestResponse(request_id=request.request_id, reason=signal.RequestResponse.OK)
            await self.send(signal.SignalResponse(request_response=ok))

    def _on_connection_state(self) -> None:
        states = (self.publisher.connectionState, self.subscriber.connectionState)
        if "connected" in states and self.info.state != _State.ACTIVE:
            self.info.state = _State.ACTIVE
            self.info.version += 1
            self._spawn(self.room.broadcast([self.info], exclude=self))
        if "failed" in states and not self.closed:
            logger.warning("media connection of %s failed", self.identity)
            self._spawn(self.close(models.DisconnectReason.MEDIA_FAILURE))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: models.DisconnectReason | None = None) -> None:
        """Hang up: send ``leave`` with ``reason`` (if any), close the socket and both connections."""
        if self.closed:
            return
        self.closed = True
        if reason is not None:
            leave = signal.LeaveRequest(reason=reason, action=signal.LeaveRequest.DISCONNECT)
            await self.send(signal.SignalResponse(leave=leave))
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        for track in self._relayed.values():
            track.stop()
        await self.ws.close()
        await asyncio.gather(self.publisher.close(), self.subscriber.close())
        for task in list(self._tasks):
            task.cancel()


def _description(kind: str, sdp: str, offer_id: int) -> signal.SessionDescription:
    return signal.SessionDescription(type=kind, sdp=sdp, id=offer_id)
