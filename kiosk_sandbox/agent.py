"""The scripted voice agent: joins its room through the official SDK and behaves like a LiveKit agent.

It publishes ``lk.agent.state``, greets with a bundled clip, answers each visitor turn (found by webrtcvad) with a
short clip and a replay of the turn, plays soft ambience on a ``background_audio`` track while thinking, and takes a
pre-connect audio buffer exactly when and as ``livekit-agents`` does (:class:`PreconnectInbox`). It can also end
the call or get stuck after the first turn (:mod:`kiosk_sandbox.agent_behaviours`). Through a reconnect of the
visitor (a new participant with the same identity and a republished microphone) it keeps listening: each new
microphone track gets its own listener.

Its text channels come in two flavours, as the real agents behind the sandbox's brokers have them:

- ``livekit-agents`` (dialects lyzr, livekit, self): transcriptions as text streams on ``lk.transcription`` (the
  visitor's turns as an interim then a final stream naming the kiosk's microphone track, its own lines as a delta
  stream whose trailer says final), and typed text read from text streams on ``lk.chat``;
- ``oshara``: ``voice.reply`` data packets (agent lines, and ``user_text`` echoes of what it heard or was sent) and
  typed text from ``voice.user_text`` packets, as Oshara's integration guide shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.rtc._proto.track_pb2 import AudioTrackFeature
from livekit.rtc.participant import UnpublishTrackError

from kiosk_sandbox.agent_audio import (
    AUDIBLE_PEAK,
    FRAME,
    RATE,
    Hearing,
    Samples,
    TurnDetector,
    fingerprint,
    load_clip,
    resample,
)
from kiosk_sandbox.agent_behaviours import GOODBYE_TEXT, AgentBehaviour, delete_room, goodbye_clip
from kiosk_sandbox.preconnect import PRECONNECT_TOPIC, PreconnectAudio, PreconnectInbox
from kiosk_sandbox.sessions import SessionRecord

logger = logging.getLogger(__name__)

GREETING_TEXT = "Hello, this is the sandbox agent."
REPLY_TEXT = "Here is what I heard."
STATE_ATTRIBUTE = "lk.agent.state"
REPLY_TOPIC = "voice.reply"
USER_TEXT_TOPIC = "voice.user_text"
CHAT_TOPIC = "lk.chat"
TRANSCRIPTION_TOPIC = "lk.transcription"
CONNECT_TIMEOUT_S = 10.0
STEP_TIMEOUT_S = 5.0


class StepTimeout(TimeoutError):
    """One step of the agent's turn (an attribute, a transcription, its speech) took longer than its bound."""


@contextlib.asynccontextmanager
async def bounded(what: str, seconds: float = STEP_TIMEOUT_S) -> AsyncIterator[None]:
    """Bound one step of the agent; a timeout becomes :class:`StepTimeout` naming ``what``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except StepTimeout:
        raise
    except TimeoutError:
        raise StepTimeout(f"{what} took over {seconds:.1f} s") from None


THINK_S = 0.6
MAX_REPLAY_S = 4.0
_AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
TF_PRECONNECT_BUFFER = AudioTrackFeature.TF_PRECONNECT_BUFFER
Event = tuple[str, Any] | None


class ScriptedAgent:
    """One agent for one session; ``run()`` returns when the session ends or a time limit passes."""

    def __init__(
        self,
        *,
        url: str,
        token: str,
        record: SessionRecord,
        state_dir: Path,
        no_show_s: float = 60.0,
        max_session_s: float = 900.0,
        behaviour: AgentBehaviour = "converse",
        room_service: tuple[str, str] | None = None,
    ) -> None:
        """Prepare an agent that joins ``url`` with the agent ``token`` and reports into ``record``.

        ``room_service`` (API key, secret) lets it delete its room (behaviour ``end_call``).
        """
        self._behaviour = behaviour
        self._room_service = room_service
        self._url = url
        self._token = token
        self._record = record
        self._wav_path = state_dir / f"{record.id}.wav"
        self._live_wav_path = state_dir / f"{record.id}.live.wav"
        self._no_show_s = no_show_s
        self._max_session_s = max_session_s
        self._room = rtc.Room()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._human = asyncio.Event()
        self._gone = asyncio.Event()
        self._listening = asyncio.Event()
        self._hearing = Hearing()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._published: list[str] = []
        self._greeting = load_clip("greeting.wav")
        self._reply = load_clip("reply.wav")
        self._oshara = record.dialect == "oshara"
        self._inbox = PreconnectInbox()
        self._voice_sid = ""
        self._mic_sid = ""
        self._segments = 0
        self._voice = rtc.AudioSource(RATE, 1, queue_size_ms=1000)
        self._ambience = rtc.AudioSource(RATE, 1, queue_size_ms=200)

    async def run(self) -> None:
        """Join, converse until the session ends, then leave."""
        room = self._room
        room.register_byte_stream_handler(PRECONNECT_TOPIC, self._inbox.on_stream)
        if self._oshara:
            room.on("data_received", self._on_data)
        else:
            room.register_text_stream_handler(CHAT_TOPIC, self._on_chat)
        room.on("track_subscribed", self._on_track)
        room.on("participant_connected", self._on_participant)
        room.on("disconnected", self._on_disconnected)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await room.connect(self._url, self._token)
            await self._set_state("initializing")
            self._voice_sid = await self._publish("agent_voice", self._voice, rtc.TrackSource.SOURCE_MICROPHONE)
            await self._publish("background_audio", self._ambience, rtc.TrackSource.SOURCE_UNKNOWN)
            await self._set_state("listening")
            await self._converse_until_gone()
        except TimeoutError:
            logger.warning("agent in room %s hit a time limit", self._record.room)
        except rtc.ConnectError as exc:
            logger.error("agent could not join room %s: %s", self._record.room, exc)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._inbox.aclose()
            self._update_record()
            await self.unpublish()
            await room.disconnect()
            await asyncio.gather(self._voice.aclose(), self._ambience.aclose())
            logger.info("agent left room %s", self._record.room)

    async def _converse_until_gone(self) -> None:
        """Converse until the room is gone or the session's time is up; stop mid-sentence if need be."""
        conversation = asyncio.create_task(self._converse())
        gone = asyncio.create_task(self._gone.wait())
        done, _ = await asyncio.wait({conversation, gone}, timeout=self._max_session_s, return_when="FIRST_COMPLETED")
        if not done:
            logger.warning("agent in room %s reached the session time limit", self._record.room)
        for task in (conversation, gone):
            task.cancel()
        await asyncio.gather(conversation, gone, return_exceptions=True)
        if conversation.done() and not conversation.cancelled() and (exc := conversation.exception()):
            logger.error("agent conversation in room %s failed: %r", self._record.room, exc)

    async def _publish(self, name: str, source: rtc.AudioSource, kind: rtc.TrackSource.ValueType) -> str:
        track = rtc.LocalAudioTrack.create_audio_track(name, source)
        async with asyncio.timeout(STEP_TIMEOUT_S):
            publication = await self._room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=kind))
        self._published.append(publication.sid)
        return publication.sid

    async def unpublish(self) -> None:
        """Unpublish the agent's tracks while still connected (the SDK keeps a capture thread per track otherwise)."""
        sids, self._published = self._published, []
        for sid in sids:
            if not self._room.isconnected():
                return
            try:
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    await self._room.local_participant.unpublish_track(sid)
            except (TimeoutError, UnpublishTrackError):
                logger.debug("agent could not unpublish %s", sid)

    async def _converse(self) -> None:
        if any(p.kind != _AGENT for p in self._room.remote_participants.values()):
            self._human.set()
        waits = [asyncio.create_task(e.wait()) for e in (self._human, self._gone)]
        await asyncio.wait(waits, timeout=self._no_show_s, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        if not self._human.is_set() or self._gone.is_set():
            logger.warning("nobody joined room %s; the agent gives up", self._record.room)
            return
        # greet once the visitor's microphone reached us (or soon anyway), so the greeting is heard from its start
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._listening.wait()
        await asyncio.sleep(0.4)
        async with self._carry_on("the greeting"):
            await self._say(self._greeting, GREETING_TEXT)
        self._record.heard.greeted = True
        while (event := await self._events.get()) is not None:
            kind, value = event
            async with self._carry_on(f"a {kind}"):
                if kind == "turn" and self._behaviour == "stuck":
                    await self._stuck(value)
                elif kind == "turn":
                    await self._answer_turn(value)
                    if self._behaviour == "end_call":
                        await self._end_call()
                        return
                elif kind == "text":
                    if self._oshara:
                        await self._reply_line({"type": "user_text", "text": value})
                    await self._say(self._reply, f"You typed: {value}")

    @contextlib.asynccontextmanager
    async def _carry_on(self, what: str) -> AsyncIterator[None]:
        """A step of the turn that runs over its bound is logged and the conversation goes on (a livekit-agents
        session logs a failed speech or attribute update and keeps the call; it does not hang up)."""
        try:
            yield
        except StepTimeout as exc:
            logger.warning("agent in room %s, answering %s: %s; going on", self._record.room, what, exc)
            with contextlib.suppress(StepTimeout):
                await self._set_state("listening")

    def _note_turn(self, turn: Samples) -> float:
        seconds = len(turn) / RATE
        heard = self._record.heard
        heard.turns += 1
        heard.speech_seconds = round(heard.speech_seconds + seconds, 3)
        self._hearing.live.append(turn)
        self._update_record()
        logger.info("agent heard a %.2f s turn in room %s", seconds, self._record.room)
        return seconds

    async def _stuck(self, turn: Samples) -> None:
        """Behaviour ``stuck``: claim to speak after the first turn and never send audio again."""
        first = self._record.heard.turns == 0
        self._note_turn(turn)
        if first:
            logger.info("agent in room %s is stuck 'speaking' from now on", self._record.room)
            await self._set_state("thinking")
            await self._set_state("speaking")

    async def _end_call(self) -> None:
        """Behaviour ``end_call``: say goodbye, let it play out, then delete the room as ``EndCallTool`` does."""
        await self._say(goodbye_clip(), GOODBYE_TEXT)
        if self._room_service is None:
            logger.warning("agent in room %s cannot end the call: no RoomService credentials", self._record.room)
            return
        key, secret = self._room_service
        logger.info("agent ends the call: deleting room %s", self._record.room)
        await delete_room(self._url, key, secret, self._record.room)

    async def _answer_turn(self, turn: Samples) -> None:
        seconds = self._note_turn(turn)
        await self._visitor_caption(f"(spoke for {seconds:.1f} seconds)")
        await self._set_state("thinking")
        await self._play(self._ambience, _ambience(THINK_S))
        replay = turn[: int(MAX_REPLAY_S * RATE)]
        await self._say(np.concatenate([self._reply, np.zeros(RATE // 5, np.int16), replay]), REPLY_TEXT)

    async def _say(self, samples: Samples, text: str) -> None:
        await self._set_state("speaking")
        if self._oshara:
            await self._reply_line({"type": "agent", "text": text})
            await self._play(self._voice, samples)
        else:
            # A delta stream, as livekit-agents sends its own speech: words while speaking, final at the end.
            writer = await self._transcription_writer(self._voice_sid)
            words = text.split()
            await writer.write(words[0])
            await self._play(self._voice, samples)
            for word in words[1:]:
                await writer.write(f" {word}")
            async with bounded("closing its transcription"):
                await writer.aclose(attributes={"lk.transcription_final": "true"})
        await self._set_state("listening")

    async def _visitor_caption(self, text: str) -> None:
        """What the agent heard: an interim then a final transcription of the kiosk's microphone track."""
        if self._oshara:
            await self._reply_line({"type": "user_text", "text": text})
            return
        segment = self._segment_id()
        for interim, final in (("(speech)", "false"), (text, "true")):
            writer = await self._transcription_writer(self._mic_sid, segment=segment, final=final)
            await writer.write(interim)
            async with bounded("closing the visitor's transcription"):
                await writer.aclose()

    async def _transcription_writer(
        self, track_sid: str, *, segment: str | None = None, final: str = "false"
    ) -> rtc.TextStreamWriter:
        attributes = {
            "lk.segment_id": segment or self._segment_id(),
            "lk.transcribed_track_id": track_sid,
            "lk.transcription_final": final,
        }
        async with bounded("opening a transcription stream"):
            return await self._room.local_participant.stream_text(topic=TRANSCRIPTION_TOPIC, attributes=attributes)

    def _segment_id(self) -> str:
        self._segments += 1
        return f"SG_{self._record.id}_{self._segments}"

    async def _play(self, source: rtc.AudioSource, samples: Samples) -> None:
        step = RATE // 50
        padded = np.concatenate([samples, np.zeros(-len(samples) % step, np.int16)])
        async with bounded("playing its speech", len(padded) / RATE + STEP_TIMEOUT_S):
            for start in range(0, len(padded), step):
                chunk = padded[start : start + step]
                await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, step))
            await source.wait_for_playout()

    async def _set_state(self, state: str) -> None:
        async with bounded(f"setting lk.agent.state to {state}"):
            await self._room.local_participant.set_attributes({STATE_ATTRIBUTE: state})

    async def _reply_line(self, message: dict[str, str]) -> None:
        payload = json.dumps(message).encode()
        async with bounded("sending a reply line"):
            await self._room.local_participant.publish_data(payload, reliable=True, topic=REPLY_TOPIC)

    def _on_disconnected(self, *_: object) -> None:
        self._gone.set()
        self._events.put_nowait(None)

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind != _AGENT:
            self._human.set()

    def _on_track(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and who.kind != _AGENT:
            self._human.set()
            self._mic_sid = pub.sid
            self._spawn(self._listen(track, pub))

    async def _listen(self, track: rtc.Track, pub: rtc.RemoteTrackPublication) -> None:
        detector = TurnDetector()
        pending = np.zeros(0, np.int16)
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        # Like livekit-agents: wait for the first words only when the track says they come (TF_PRECONNECT_BUFFER),
        # and hear them before the live audio, which the stream keeps meanwhile.
        if TF_PRECONNECT_BUFFER in pub.audio_features:
            audio = await self._inbox.take(pub.sid)
            self._record.heard.preconnect_at = self._inbox.arrived_at
            self._record.heard.preconnect_wait_from = self._inbox.waited_from
            if audio is not None:
                self._took_preconnect(audio)
            else:
                self._record.heard.preconnect_rejected = self._inbox.rejected
        self._listening.set()
        async for event in stream:
            samples = np.frombuffer(bytes(event.frame.data), dtype=np.int16)
            heard = self._record.heard
            if heard.first_audio_at is None and len(samples) and int(np.abs(samples).max()) > AUDIBLE_PEAK:
                heard.first_audio_at = time.monotonic()
            self._hearing.record_stream(samples)
            pending = np.concatenate([pending, samples])
            while len(pending) >= FRAME:
                frame, pending = pending[:FRAME], pending[FRAME:]
                if (turn := detector.feed(frame)) is not None:
                    self._events.put_nowait(("turn", turn))

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != USER_TEXT_TOPIC:
            return
        try:
            message = json.loads(packet.data)
            text = str(message.get("text", "")).strip() if isinstance(message, dict) else ""
        except (json.JSONDecodeError, UnicodeDecodeError):
            text = packet.data.decode(errors="replace").strip()
        self._typed(text)

    def _on_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                self._typed((await reader.read_all()).strip())

        self._spawn(read())

    def _typed(self, text: str) -> None:
        if text:
            self._record.heard.user_texts.append(text)
            self._events.put_nowait(("text", text))

    def _took_preconnect(self, audio: PreconnectAudio) -> None:
        heard = self._record.heard
        heard.preconnect_seconds = round(heard.preconnect_seconds + audio.seconds, 3)
        heard.preconnect_sample_rate = audio.sample_rate
        heard.preconnect_channels = audio.channels
        heard.preconnect_mime_type = audio.mime_type
        heard.preconnect_track_id = audio.track_id
        self._hearing.preconnect.append(resample(audio.samples, audio.sample_rate))
        self._update_record()
        logger.info("agent took %.2f s of pre-connect audio from %s", audio.seconds, audio.sender)

    def _update_record(self) -> None:
        heard = self._hearing.all()
        if len(heard):
            self._record.heard.wav_path = str(self._hearing.write_wav(self._wav_path))
            self._record.heard.fingerprint = fingerprint(heard)
        if self._hearing.stream:
            self._record.heard.live_wav_path = str(self._hearing.write_stream(self._live_wav_path))
            self._record.heard.live_seconds = round(self._hearing.stream_seconds, 3)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _ambience(seconds: float) -> Samples:
    """Soft, smoothed noise: the 'thinking' sound on the background track."""
    rng = np.random.default_rng()
    noise = rng.normal(0.0, 900.0, int(seconds * RATE))
    smooth = np.convolve(noise, np.ones(8) / 8, mode="same")
    return smooth.astype(np.int16)
