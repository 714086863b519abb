"""One participant's signaling socket and its two aiortc peer connections (publisher and subscriber)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from livekit.protocol import models
from livekit.protocol import rtc as signal

from kiosk_sandbox.negotiation import SubscriberOffers, TrickledCandidates, description
from kiosk_sandbox.resume import IceCredentials, adopt_remote_ice, ice_credentials, leave
from kiosk_sandbox.sfu_rules import track_info

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack, RTCDataChannel, RTCRtpSender
    from aiortc.contrib.media import MediaRelay

logger = logging.getLogger(__name__)

_State = models.ParticipantInfo.State


def peer_connection() -> RTCPeerConnection:
    """A sandbox-side peer connection: host candidates only, aiortc's default (``balanced``) bundle policy.

    Not ``max-bundle``: aiortc then shares the data channels' transport with the transceivers and, when the answer's
    BUNDLE names an audio section first, stops that shared transport as if it were a spare one.
    """
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class PeerRoom(Protocol):
    """What a participant needs of the room it joined (:class:`kiosk_sandbox.rooms.Room`)."""

    #: The relay that fans each published track out to its readers.
    relay: MediaRelay

    async def publish(self, peer: Peer, info: models.TrackInfo, track: MediaStreamTrack) -> None:
        """Make ``peer``'s new ``track`` known to everyone and forward it to the others."""

    async def broadcast(self, infos: Iterable[models.ParticipantInfo], *, exclude: Peer | None = None) -> None:
        """Send a ``ParticipantUpdate`` with ``infos`` to every participant but ``exclude``."""

    def forward_data(self, sender: Peer, label: str, payload: bytes) -> None:
        """Forward a ``DataPacket`` from ``sender`` on the channel of the same label."""

    async def simulate(self, peer: Peer, scenario: signal.SimulateScenario) -> None:
        """Act on ``peer``'s ``SimulateScenario`` request."""


class Peer:
    """A participant: answers its publisher offers, offers it everyone else's tracks, relays its data."""

    def __init__(self, *, room: PeerRoom, info: models.ParticipantInfo, ws: web.WebSocketResponse | None) -> None:
        """Wrap the participant ``info`` joined to ``room`` over the signaling socket ``ws``."""
        self.room = room
        self.info = info
        self.ws = ws
        self.closed = False
        #: False once its peer connection failed: aiortc cannot restart ICE, so a resume would not bring it back.
        self.resumable = True
        #: The last reliable ``DataPacket.sequence`` received (``ReconnectResponse.last_message_seq``).
        self.last_reliable_seq = 0
        #: Simulated faults armed for the next resume (``SimulateScenario``), by field name.
        self.faults: set[str] = set()
        #: When the signal was found gone (``loop.time()``), None while attached; and the departure timer.
        self.detached_at: float | None = None
        self.departure: asyncio.TimerHandle | None = None
        self._publisher_ice: IceCredentials | None = None
        self.publisher = peer_connection()
        self.subscriber = peer_connection()
        self._channels: dict[str, RTCDataChannel] = {
            "_reliable": self.subscriber.createDataChannel("_reliable", ordered=True),
            "_lossy": self.subscriber.createDataChannel("_lossy", ordered=False, maxRetransmits=0),
        }
        self._early: list[tuple[str, bytes]] = []
        self._pending_tracks: dict[str, models.TrackInfo] = {}
        self._senders: dict[str, RTCRtpSender] = {}
        self._relayed: dict[str, MediaStreamTrack] = {}
        #: Subscriptions waiting for the first audio transceiver's answer (see :meth:`subscribe`).
        self._held: list[tuple[Peer, str, MediaStreamTrack]] = []
        self._to_confirm: list[tuple[Peer, str]] = []
        self._candidates = TrickledCandidates(self.publisher, self.subscriber)
        self._offers = SubscriberOffers(
            self.subscriber, name=info.identity, send=self.send, answered=self._after_answer
        )
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
        """Send one signaling message, unless there is no socket or it is already closing."""
        ws = self.ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_bytes(response.SerializeToString())
        except ConnectionError as exc:
            logger.debug("signal to %s lost: %s", self.identity, exc)

    def attach(self, ws: web.WebSocketResponse) -> web.WebSocketResponse | None:
        """Take ``ws`` as the signaling socket (a resume); return the one it replaces, if any."""
        old, self.ws = self.ws, ws
        self.detached_at = None
        if self.departure is not None:
            self.departure.cancel()
            self.departure = None
        return old

    def detach(self) -> None:
        """Forget the signaling socket (it dropped); the participant and its media stay."""
        self.ws = None
        self.detached_at = asyncio.get_running_loop().time()

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
        """Forward ``track`` (a relay of ``owner``'s track ``track_sid``) to this participant.

        Until the first audio track's offer is answered, later subscriptions wait: aiortc (1.16, ``balanced`` bundle
        policy) gives the first audio transceiver a transport of its own and every later one that same transport,
        and the answer's BUNDLE moves only the first onto the data channels' transport, stopping the other; a
        second track added in that first round never sends (its listener hears silence).
        """
        if self.closed or track_sid in self._senders or any(sid == track_sid for _, sid, _ in self._held):
            # Joining and publishing can interleave (a join awaits its broadcast while another peer publishes):
            # a second subscription to the same track would put a duplicate msid into the SDP, which the SDK rejects.
            track.stop()
            return
        transceivers = self.subscriber.getTransceivers()
        if transceivers and transceivers[0].currentDirection is None:
            self._held.append((owner, track_sid, track))
            return
        # the SDK finds the publication from the msid: "<participant sid>|<track sid> <track sid>"
        track._id = track_sid
        # A new transceiver each time: aiortc's addTrack would reuse one whose track was removed, continuing its
        # SSRC with the new track's RTP timestamps, which a receiver's jitter buffer may take as old and drop.
        sender = self.subscriber.addTransceiver(track, direction="sendonly").sender
        sender._stream_id = f"{owner.sid}|{track_sid}"
        self._senders[track_sid] = sender
        self._relayed[track_sid] = track
        self._to_confirm.append((owner, track_sid))
        self.request_offer()

    def unsubscribe(self, track_sid: str) -> None:
        """Stop forwarding track ``track_sid`` to this participant."""
        for held in [h for h in self._held if h[1] == track_sid]:
            self._held.remove(held)
            held[2].stop()
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
        self._offers.request()

    def renegotiate(self) -> None:
        """Offer the subscriber connection anew after a resume (livekit-server sends an ICE-restart offer here)."""
        self._offers.restart()

    async def _after_answer(self) -> None:
        await self._candidates.flush(1)
        await self._confirm_subscriptions()
        held, self._held = self._held, []
        for owner, track_sid, track in held:
            self.subscribe(owner, track_sid, track)

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
            self._offers.answer(request.answer.sdp)
        elif kind == "trickle":
            await self._candidates.add(request.trickle)
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
        elif kind == "simulate":
            await self.room.simulate(self, request.simulate)
        else:
            logger.debug("ignoring %s from %s", kind, self.identity)
        return True

    async def _answer_publisher(self, offer: signal.SessionDescription) -> None:
        credentials = ice_credentials(offer.sdp)
        await self.publisher.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        if credentials is not None and self._publisher_ice not in (None, credentials):
            count = adopt_remote_ice(self.publisher, credentials)
            logger.info("%s restarted ICE on its publisher connection (%d agent(s) follow)", self.identity, count)
        self._publisher_ice = credentials or self._publisher_ice
        await self._candidates.flush(0)
        await self.publisher.setLocalDescription(await self.publisher.createAnswer())
        sdp = self.publisher.localDescription.sdp
        await self.send(signal.SignalResponse(answer=description("answer", sdp, offer.id)))

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
        if "failed" in states and not self.closed and self.resumable:
            # livekit-server restarts ICE here (leave{RESUME}); aiortc cannot, so ask for a full reconnect.
            logger.warning("media connection of %s failed; asking for a full reconnect", self.identity)
            self.resumable = False
            self._spawn(self._ask_full_reconnect())

    async def _ask_full_reconnect(self) -> None:
        await self.send(leave(models.DisconnectReason.STATE_MISMATCH, signal.LeaveRequest.RECONNECT))
        if self.ws is not None:
            await self.ws.close()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: models.DisconnectReason | None = None) -> None:
        """Hang up: send ``leave{reason, DISCONNECT}`` (if a reason), close the socket and both connections."""
        if self.closed:
            return
        self.closed = True
        if self.departure is not None:
            self.departure.cancel()
        if reason is not None:
            await self.send(leave(reason))
        self._offers.close()
        for track in [*self._relayed.values(), *(held[2] for held in self._held)]:
            track.stop()
        if self.ws is not None:
            await self.ws.close()
        await asyncio.gather(self.publisher.close(), self.subscriber.close())
        for task in list(self._tasks):
            task.cancel()
