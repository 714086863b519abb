"""One LiveKit room for one session, through the official SDK: publish the microphone, hear the agent.

The room reports what happens as session events (agent joined / state / left, disconnected) through ``on_event``,
hands every remote audio track (the agent's voice, its ``background_audio`` track, an avatar's voice) to
``on_audio`` as 48 kHz mono frames, and turns the agent's transcriptions into captions (:mod:`kiosk.daemon.captions`).

Which participant is the agent, and its comings and goings, are followed by
:class:`~kiosk.daemon.agent_presence.AgentPresence`.

When the link drops, the SDK first *resumes* (the same participant and tracks, the signal connection and ICE
restarted) and falls back to a *full reconnect* (rejoin: the server gives new participant objects and the SDK
republishes the microphone under a new track sid, ``local_track_republished``). Either way it emits
``connection_state_changed`` (``CONN_RECONNECTING``) and ``reconnecting`` first, and ``reconnected`` once the room is
back; a full reconnect also removes and re-adds every remote participant on the way (``participant_disconnected`` /
``participant_connected``), which is not the agent leaving. The room reports :class:`~kiosk.session.Reconnecting` /
:class:`~kiosk.session.Reconnected`, follows the agent to its new participant object, and maps the reason of a
final ``disconnected`` to a named end (:mod:`kiosk.daemon.roomends`).

The first words a visitor spoke while the kiosk connected are sent to the agent with LiveKit's pre-connect audio
buffer protocol: a byte stream on topic ``lk.agent.pre-connect-audio-buffer`` addressed to the agent, Ogg Opus
(raw 16-bit PCM where Opus cannot be encoded), with ``sampleRate``, ``channels`` and ``trackId`` attributes,
announced by publishing the microphone with ``preconnect_buffer`` (audio feature ``TF_PRECONNECT_BUFFER``). Typed
text goes on the agent's text channel: a text stream on ``lk.chat`` (livekit-agents) or a ``voice.user_text`` data
packet (Oshara).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from livekit import rtc

from kiosk.audio.preroll import PreConnectAudio, UplinkBuffer, encode_for_uplink, encoded_ahead, pcm_for_uplink
from kiosk.daemon.agent_presence import AgentActivity, AgentPresence, RoomLink
from kiosk.daemon.captions import Caption, CaptionBook
from kiosk.daemon.roomends import end_for, reason_name
from kiosk.daemon.roomtext import RoomText
from kiosk.session import AgentState, Event, Reconnected, Reconnecting

log = logging.getLogger(__name__)

RATE = 48000
FRAME = RATE // 100
PRECONNECT_TOPIC = "lk.agent.pre-connect-audio-buffer"
#: Where an agent reads typed text: livekit-agents' chat topic (a text stream), or Oshara's data topic.
CHAT_TOPIC = "lk.chat"
USER_TEXT_TOPIC = "voice.user_text"
TextTopic = Literal["lk.chat", "voice.user_text"]
#: The longest the first words' Opus encoding may take before they go as raw PCM instead (s): about 15 ms of CPU per
#: second of speech normally (kiosk.audio.opus), so this is only reached on a starved CPU; the agent drops a buffer
#: not received whole within 3 s of subscribing (livekit-agents' pre_connect_audio_timeout).
OPUS_BUDGET_S = 1.0
#: How long the first words' last part may take to encode while the kiosk is short of CPU (s): beyond it, PCM.
SHORT_OPUS_WAIT_S = 0.5
BACKGROUND_TRACK = "background_audio"


AudioSink = Callable[[str, npt.NDArray[np.int16]], None]


class AgentRoom:
    """The session's room: connect, publish the mic, follow the agent, play its tracks, exchange text."""

    def __init__(
        self,
        *,
        on_event: Callable[[Event], None],
        on_audio: AudioSink,
        on_caption: Callable[[Caption], None],
        agent_state: Callable[[], AgentState],
        text_topic: TextTopic = "lk.chat",
        clock: Callable[[], float] = time.monotonic,
        short_of_cpu: Callable[[], bool] = lambda: False,
    ) -> None:
        """Report session events to ``on_event``, remote audio to ``on_audio``, captions to ``on_caption``;
        ``agent_state()`` reads the agent's state as the session knows it; ``clock`` (monotonic s) stamps
        :attr:`activity`; while ``short_of_cpu()`` (:meth:`kiosk.cpuwatch.CpuWatch.short`) the first words skip the
        Opus encode."""
        self._on_event = on_event
        self._short_of_cpu = short_of_cpu
        self._on_audio = on_audio
        self._now = clock
        self.captions = CaptionBook(on_caption=on_caption)
        self._text_topic = text_topic
        self.room = rtc.Room()
        self._source = rtc.AudioSource(RATE, 1, queue_size_ms=200)
        self._mic_sid = ""
        self._link = RoomLink()
        self.presence = AgentPresence(
            room=self.room, link=self._link, on_event=on_event, agent_state=agent_state, clock=clock
        )
        #: When the agent last did what (its audio, its state), for the session's clocks.
        self.activity: AgentActivity = self.presence.activity
        self._tasks: set[asyncio.Task[None]] = set()
        #: Remote audio streams by track sid (a full reconnect subscribes anew: the old ones end).
        self._streams: dict[str, rtc.AudioStream] = {}
        #: Every sid the microphone was published under (a full reconnect republishes it), for visitor captions.
        self._mic_sids: set[str] = set()
        self._connecting: asyncio.Future[None] | None = None
        self.room.on("participant_connected", self.presence.participant_connected)
        self.room.on("participant_disconnected", self.presence.participant_disconnected)
        self.room.on("participant_attributes_changed", self.presence.attributes_changed)
        self.room.on("track_subscribed", self._track_subscribed)
        self._text = RoomText(
            room=self.room,
            captions=self.captions,
            mic_sids=self._mic_sids,
            closing=lambda: self._link.closing,
            spawn=self._spawn,
        )
        self.room.on("disconnected", self._disconnected)
        self.room.on("reconnecting", self._reconnecting)
        self.room.on("reconnected", self._reconnected)
        self.room.on("connection_state_changed", self._connection_state_changed)
        self.room.on("track_unsubscribed", self._track_unsubscribed)
        self.room.on("local_track_subscribed", self._mic_subscribed)
        self.room.on("local_track_republished", self._mic_republished)
        self._mic_heard = asyncio.Event()

    async def connect(self, url: str, token: str, *, budget_s: float) -> None:
        """Join the room and publish the microphone track; raises ``rtc.ConnectError`` or ``TimeoutError``.

        The SDK's connect is never cancelled half-way (that leaves a participant the SDK cannot disconnect): a
        teardown or the budget only stop the waiting, and :meth:`close` finishes the connect before leaving.
        """
        self._connecting = asyncio.ensure_future(self._connect(url, token, budget_s))
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result of an awaitable that finished
        # in the same moment the caller was cancelled, and the cancellation (a shutdown) is lost.
        async with asyncio.timeout(budget_s):
            await asyncio.shield(self._connecting)
        for participant in self.room.remote_participants.values():
            self.presence.participant_connected(participant)

    async def _connect(self, url: str, token: str, budget_s: float) -> None:
        await self.room.connect(url, token, rtc.RoomOptions(auto_subscribe=True, connect_timeout=budget_s))
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        publish = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, preconnect_buffer=True)
        publication = await self.room.local_participant.publish_track(track, publish)
        self._mic_sid = publication.sid
        self._mic_sids.add(publication.sid)

    @property
    def mic_sid(self) -> str:
        """The microphone's track sid now ("" before it is published); a full reconnect changes it."""
        return self._mic_sid

    @property
    def link_up(self) -> bool:
        """False from the SDK's ``reconnecting`` to its ``reconnected`` (or the end)."""
        return self._link.up

    @property
    def reconnects(self) -> int:
        """How many times the SDK began reconnecting in this session."""
        return self._link.reconnects

    async def wait_for_agent(self, within_s: float) -> bool:
        """Wait until the agent is in the room; False when it did not come in time."""
        return await _within(self.presence.present, within_s)

    async def wait_mic_subscribed(self, within_s: float) -> bool:
        """Wait until someone (the agent) subscribed to the microphone: frames sent before that are lost."""
        return await _within(self._mic_heard, within_s)

    @property
    def mic_queued_s(self) -> float:
        """Seconds of microphone audio handed to the SDK's ``AudioSource`` and not sent yet (its queue)."""
        return float(self._source.queued_duration)

    async def send_mic(self, samples: npt.NDArray[np.int16]) -> None:
        """Publish processed microphone audio (48 kHz mono int16; 10-30 ms, one ``capture_frame`` request)."""
        frame = rtc.AudioFrame(samples.tobytes(), RATE, 1, len(samples))
        await self._source.capture_frame(frame)

    async def send_preconnect(self, audio: PreConnectAudio) -> None:
        """Send the audio recorded before the agent listened as its pre-connect buffer (one byte stream).

        Compressed as Ogg Opus (``audio/ogg;codecs=opus``, about 3 kB per second of speech) in a worker thread, or
        raw PCM when Opus cannot be encoded here (:func:`kiosk.audio.preroll.encode_for_uplink` logs why) or not in
        time (see :meth:`_uplink_buffer`). Sent even when empty (a press in the first moments after the microphone opened): the
        track is published with
        ``TF_PRECONNECT_BUFFER``, and an agent on ``livekit-agents`` waits up to its ``pre_connect_audio_timeout``
        (3 s) for the buffer before it reads the live track, and drops one not received whole within 3 s.
        """
        agent = self.presence.agent
        if agent is None:
            return
        buffer = await self._uplink_buffer(audio)
        attributes = {
            "sampleRate": str(buffer.sample_rate),
            "channels": str(buffer.num_channels),
            "trackId": self._mic_sid,
        }
        try:
            await self.room.local_participant.send_bytes(
                buffer.payload,
                topic=PRECONNECT_TOPIC,
                name="preconnect",
                mime_type=buffer.mime_type,
                destination_identities=[agent.identity],
                attributes=attributes,
            )
        except rtc.StreamError as exc:
            # The room went away under the send (the server removed the kiosk, the link died): its disconnect or
            # reconnect event names what happened; the words are lost with the room either way.
            log.warning("the first words could not be sent to the agent: %s", exc)
            return
        log.info(
            "sent %.2f s of first words to the agent (%s, %s, %d Hz, %.1f kB, encoded in %.0f ms)",
            buffer.duration_s,
            buffer.codec,
            buffer.mime_type,
            buffer.sample_rate,
            len(buffer.payload) / 1024,
            buffer.encode_ms,
        )

    async def _uplink_buffer(self, audio: PreConnectAudio) -> UplinkBuffer:
        """The buffer to send: what was encoded while it was held (``audio.opus``), waited for up to
        :data:`OPUS_BUDGET_S` (:data:`SHORT_OPUS_WAIT_S` while the kiosk is short of CPU); else encoded now, or as PCM
        when the kiosk is short of CPU or the encode would take too long. Never raises for an encoding problem."""
        short = self._short_of_cpu()
        if audio.opus is not None:
            started = time.perf_counter()
            wait_s = SHORT_OPUS_WAIT_S if short else OPUS_BUDGET_S
            try:
                payload = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(audio.opus)), wait_s)
            except TimeoutError:
                log.warning("the first words' last part was not encoded within %.1f s; sending them as PCM", wait_s)
                return await asyncio.to_thread(pcm_for_uplink, audio)
            except Exception:  # the encoder's own failure: the words still go, encoded now
                log.exception("the first words encoded ahead are lost; encoding them now")
                payload = None
            if payload is not None:
                return encoded_ahead(audio, payload, (time.perf_counter() - started) * 1000)
        if short:
            # Encoding needs CPU the kiosk does not have now: the 1 s an attempt may take is most of the agent's 3 s.
            log.info("short of CPU: the first words go as PCM, without an Opus encode")
            return await asyncio.to_thread(pcm_for_uplink, audio)
        return await self._encoded(audio)

    @staticmethod
    async def _encoded(audio: PreConnectAudio) -> UplinkBuffer:
        """``audio`` as Ogg Opus in a worker thread, or as PCM when that takes over :data:`OPUS_BUDGET_S`."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(encode_for_uplink, audio), OPUS_BUDGET_S)
        except TimeoutError:
            # A starved CPU (seen: 4.3 s for 4.6 s of speech while an agent's job process started) would make the
            # buffer miss the agent's 3 s window; raw PCM costs bytes, not time. The encode thread runs out alone.
            log.warning("encoding the first words as Opus took over %.1f s; sending them as PCM", OPUS_BUDGET_S)
            return await asyncio.to_thread(pcm_for_uplink, audio)

    async def say(self, text: str) -> None:
        """Send typed text to the agent on its text channel; shown as the visitor's caption once."""
        self.captions.typed(text)
        if self._text_topic == CHAT_TOPIC:
            await self.room.local_participant.send_text(text, topic=CHAT_TOPIC)
        else:
            payload = json.dumps({"type": "user_text", "text": text}).encode()
            await self.room.local_participant.publish_data(payload, reliable=True, topic=USER_TEXT_TOPIC)

    async def stop_mic(self, *, budget_s: float = 1.0) -> None:
        """Unpublish the microphone while still connected.

        The SDK keeps a published track's native capture thread alive after the room is left, one per session,
        unless the track is unpublished first; a kiosk runs thousands of sessions.
        """
        sid, self._mic_sid = self._mic_sid, ""
        if not sid or not self.room.isconnected():
            return
        try:
            await asyncio.wait_for(self.room.local_participant.unpublish_track(sid), timeout=budget_s)
        except Exception:  # a room closing under us: nothing more to release here
            log.debug("unpublishing the microphone failed", exc_info=True)

    def leaving(self) -> None:
        """The session is ending: the agent leaving or the room closing from now on is expected."""
        self._link.closing = True

    async def close(self, *, budget_s: float = 5.0) -> None:
        """Leave the room, stop the audio pumps and release the microphone source, within ``budget_s``."""
        self._link.closing = True
        deadline = asyncio.get_running_loop().time() + budget_s
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=min(1.0, budget_s / 4))
        try:
            if self._connecting is not None and not self._connecting.done():
                # Let an interrupted connect finish (it is bounded by the SDK's connect timeout) so it can be left.
                await asyncio.wait({self._connecting}, timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
            remaining = max(0.1, deadline - asyncio.get_running_loop().time())
            await asyncio.wait_for(self.room.disconnect(), timeout=remaining)
        except Exception:  # leaving a room that is already gone is fine, but say so
            log.debug("room teardown was not clean", exc_info=True)
        finally:
            for stream in self._streams.values():
                await stream.aclose()
            self._streams.clear()
            await self._source.aclose()

    # ---- SDK callbacks (on the event loop) ------------------------------------------------------------------------

    def _mic_subscribed(self, track: rtc.Track) -> None:
        self._mic_heard.set()

    def _track_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if self._link.closing or track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        name = "background" if publication.name == BACKGROUND_TRACK else "agent"
        # 30 ms frames: a third of the FFI events of 10 ms ones; the mixer takes any length.
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=30)
        old = self._streams.pop(publication.sid, None)
        if old is not None:
            self._spawn(old.aclose())
        self._streams[publication.sid] = stream
        self._spawn(self._pump(name, stream))
        log.debug("playing %s track %s of %s", name, publication.sid, participant.identity)

    def _track_unsubscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        # A full reconnect unsubscribes the agent's tracks and subscribes to them anew: end the old stream's pump,
        # or two pumps would feed the same mixer input.
        stream = self._streams.pop(publication.sid, None)
        if stream is not None:
            self._spawn(stream.aclose())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, name: str, stream: rtc.AudioStream) -> None:
        async for event in stream:
            if self._link.closing:
                break
            samples = np.frombuffer(event.frame.data, dtype=np.int16)
            if name == "agent":
                self.activity.heard(samples, self._now())
            self._on_audio(name, samples)

    def _disconnected(self, reason: int) -> None:
        self.presence.disconnected()
        self._link.up = False
        if not self._link.closing:
            event = end_for(reason, agent_spoke=self.activity.spoke)
            log.warning("room disconnected: %s (%s)", reason_name(reason), type(event).__name__)
            self._on_event(event)

    def _connection_state_changed(self, state: int) -> None:
        log.debug("room connection state %s", rtc.ConnectionState.Name(state))  # type: ignore[arg-type]

    def _reconnecting(self) -> None:
        self._link.up = False
        self._link.reconnects += 1
        if not self._link.closing:
            log.warning("room connection lost: the SDK is reconnecting (%d in this session)", self._link.reconnects)
            self._on_event(Reconnecting())

    def _reconnected(self) -> None:
        self._link.up = True
        if self._link.closing:
            return
        log.info("room connection back (microphone track %s)", self._mic_sid)
        self._on_event(Reconnected())
        self.presence.reconnected()

    def _mic_republished(self, publication: rtc.LocalTrackPublication, previous_sid: str) -> None:
        if previous_sid != self._mic_sid:
            return
        log.info("microphone republished by the full reconnect: %s -> %s", previous_sid, publication.sid)
        self._mic_sid = publication.sid
        self._mic_sids.add(publication.sid)
        self._mic_heard.clear()  # the agent subscribes to the new track anew


async def _within(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` is set within ``seconds``; a cancellation always propagates, even one that arrives as the
    event is set (``asyncio.wait_for`` on Python 3.11 loses it then)."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
