"""A real ``livekit-agents`` worker whose STT, LLM and TTS are local fakes that report what they got.

Runs in its own virtual environment (``scripts/setup-agents.sh`` makes ``.venv-agents``), never imported by the test
process. Everything but the three models is the framework's own: the worker registers at the server's ``/agent``,
takes jobs, and each job runs an ``AgentSession`` with the framework's ``RoomIO`` (pre-connect audio, transcriptions
on ``lk.transcription``, typed input on ``lk.chat``, ``lk.agent.state``).

- STT: measures the audio it is fed with ``speech_meter.SpeechMeter``. Each utterance becomes the final transcript
  ``heard N.N s``; interim transcripts count up while it lasts.
- LLM: answers ``You said: <the user's last message>``.
- TTS: a tone whose length follows the text.

Environment: ``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET`` (the server), ``KIOSK_AGENT_NAME`` (the
agent name to register; empty = automatic dispatch), ``KIOSK_AGENT_REPORTS`` (a directory: each job writes
``<room>.json`` with what its STT heard), ``KIOSK_AGENT_CONTROL`` (optional JSON file read at each job start:
``{"join_delay_s": 4.0}`` delays the agent's joining, so a visitor's first words wait in the kiosk's buffer).
Prints ``WORKER REGISTERED <id>`` once registered (``start``), or ``WATCHING ROOMS`` (``watch SECONDS``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api, rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    Agent,
    AgentServer,
    AgentSession,
    APIConnectOptions,
    JobContext,
    cli,
    llm,
    stt,
    tts,
    utils,
)
from livekit.agents.types import NotGivenOr
from livekit.agents.voice.room_io import RoomOptions
from livekit.protocol import models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speech_meter import SpeechMeter  # beside this script, shared with the tests

logger = logging.getLogger("echo-worker")

TTS_RATE = 24000


class Hearing:
    """What the STT was fed, written to ``<reports>/<room>.json`` after every utterance and every second of audio."""

    def __init__(self, path: Path | None) -> None:
        """Write reports to ``path`` (None: keep them in memory only)."""
        self.path = path
        self.meter = SpeechMeter()
        self.audio_s = 0.0
        self.first_audio_at: float | None = None
        #: The peak sample of each second of audio fed so far (the last 120 s): tells silence from quiet speech.
        self.peaks: list[int] = []

    def write(self) -> None:
        """Save the report atomically."""
        if self.path is None:
            return
        report = {
            "utterances": [
                {"span_s": round(u.span_s, 3), "audible_s": round(u.audible_s, 3)} for u in self.meter.utterances
            ],
            "speech_s": round(self.meter.speech_s, 3),
            "audio_s": round(self.audio_s, 3),
            "first_audio_at": self.first_audio_at,
            "peaks_by_s": self.peaks[-120:],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        tmp.replace(self.path)


class HearingSTT(stt.STT):
    """A streaming STT that transcribes audio as the length of what was heard."""

    def __init__(self, hearing: Hearing) -> None:
        """Report into ``hearing``."""
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=True))
        self.hearing = hearing

    async def _recognize_impl(
        self, buffer: Any, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        raise NotImplementedError("only streaming recognition")

    def stream(
        self, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> stt.RecognizeStream:
        """A stream that measures its input."""
        return HearingStream(stt=self, conn_options=conn_options)


class HearingStream(stt.RecognizeStream):
    """Cuts the input into utterances (``SpeechMeter``) and transcribes each as ``heard N.N s``."""

    async def _run(self) -> None:
        hearing: Hearing = self._stt.hearing  # type: ignore[attr-defined]
        async for item in self._input_ch:
            if not isinstance(item, rtc.AudioFrame):
                continue
            if hearing.first_audio_at is None:
                hearing.first_audio_at = time.time()
            samples = np.frombuffer(item.data, np.int16).reshape(-1, item.num_channels)[:, 0]
            before = int(hearing.audio_s)
            hearing.audio_s += len(samples) / item.sample_rate
            peak = int(np.abs(samples.astype(np.int32)).max()) if len(samples) else 0
            if not hearing.peaks or int(hearing.audio_s) != before:
                hearing.peaks.append(peak)
            else:
                hearing.peaks[-1] = max(hearing.peaks[-1], peak)
            if int(hearing.audio_s) != before:
                hearing.write()
            for kind, span_s in hearing.meter.feed(samples, item.sample_rate):
                if kind == "start":
                    self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH))
                elif kind == "interim":
                    self._send(stt.SpeechEventType.INTERIM_TRANSCRIPT, span_s)
                else:
                    hearing.write()
                    self._send(stt.SpeechEventType.FINAL_TRANSCRIPT, span_s)
                    self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))

    def _send(self, kind: stt.SpeechEventType, seconds: float) -> None:
        data = stt.SpeechData(language="en", text=f"heard {seconds:.1f} s", confidence=1.0)
        self._event_ch.send_nowait(stt.SpeechEvent(type=kind, alternatives=[data]))


class EchoLLM(llm.LLM):
    """Answers with the user's last message."""

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        **_: Any,
    ) -> llm.LLMStream:
        """Stream the echo."""
        return EchoStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class EchoStream(llm.LLMStream):
    """One echo answer, in two chunks."""

    async def _run(self) -> None:
        said = ""
        for item in reversed(self._chat_ctx.items):
            if getattr(item, "role", None) == "user":
                said = item.text_content or ""
                break
        answer = f"You said: {said}" if said else "Hello, I am listening."
        request_id = uuid.uuid4().hex
        for piece in (answer[: len(answer) // 2], answer[len(answer) // 2 :]):
            delta = llm.ChoiceDelta(role="assistant", content=piece)
            self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=delta))


class ToneTTS(tts.TTS):
    """Speaks any text as a soft 440 Hz tone, 50 ms per character (at most 3 s)."""

    def __init__(self) -> None:
        """A mono 24 kHz non-streaming TTS."""
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=TTS_RATE, num_channels=1)

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> ToneStream:
        """Synthesize ``text``."""
        return ToneStream(tts=self, input_text=text, conn_options=conn_options)


class ToneStream(tts.ChunkedStream):
    """The tone for one text."""

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        seconds = min(3.0, 0.3 + 0.05 * len(self._input_text))
        t = np.arange(int(seconds * TTS_RATE)) / TTS_RATE
        envelope = np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)
        samples = (6000 * envelope * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        output_emitter.initialize(
            request_id=utils.shortuuid(), sample_rate=TTS_RATE, num_channels=1, mime_type="audio/pcm"
        )
        output_emitter.push(samples.tobytes())
        output_emitter.flush()


class EchoAgent(Agent):
    """Listens first, then echoes.

    It does not greet: an agent's first speech is not interruptible while its echo canceller warms up, and the
    framework discards the visitor's audio meanwhile (``discard_audio_if_uninterruptible``), which would hide what the
    kiosk delivered behind the agent's own policy.
    """

    def __init__(self) -> None:
        """An agent with fixed instructions (the fake LLM ignores them)."""
        super().__init__(instructions="Repeat what the visitor said.")


def _control() -> dict[str, Any]:
    path = os.environ.get("KIOSK_AGENT_CONTROL", "")
    if not path or not Path(path).exists():
        return {}
    control: dict[str, Any] = json.loads(Path(path).read_text() or "{}")
    return control


async def entrypoint(ctx: JobContext) -> None:
    """One job: (optionally wait, then) run an AgentSession in the room."""
    delay = float(_control().get("join_delay_s", 0.0))
    if delay:
        logger.info("waiting %.1f s before joining %s", delay, ctx.room.name)
        await asyncio.sleep(delay)
    reports = os.environ.get("KIOSK_AGENT_REPORTS", "")
    hearing = Hearing(Path(reports) / f"{ctx.job.room.name}.json" if reports else None)
    hearing.write()
    session: AgentSession[None] = AgentSession(
        stt=HearingSTT(hearing),
        llm=EchoLLM(),
        tts=ToneTTS(),
        vad=None,
        turn_handling={"turn_detection": "stt", "endpointing": {"min_delay": 0.2, "max_delay": 1.0}},
    )
    await session.start(agent=EchoAgent(), room=ctx.room, room_options=RoomOptions())
    await ctx.connect()


async def watch_rooms(server: AgentServer, join_after_s: float) -> None:
    """An outside agent: join each new room by itself, ``join_after_s`` after the room was created.

    Nobody dispatches it (``kiosk sandbox --agent none``): it finds rooms through the server's RoomService, as
    ``python agent.py connect --room NAME`` does, and runs the job in the framework's own process pool.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = asyncio.Event()
    server.on("worker_started", started.set)
    running = asyncio.create_task(server.run(devmode=True, unregistered=True))
    await started.wait()
    joins: set[asyncio.Task[None]] = set()

    async def join_later(room: models.Room) -> None:
        await asyncio.sleep(max(0.0, room.creation_time_ms / 1000 + join_after_s - time.time()))
        logger.info("joining room %s by itself", room.name)
        await server.simulate_job(
            room=room.name, fake_job=False, room_info=room, agent_identity=f"outside-{utils.shortuuid()}"
        )

    async with api.LiveKitAPI() as lk:
        seen = {r.sid for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms}
        print("WATCHING ROOMS", flush=True)
        while not running.done():
            for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
                if room.sid not in seen:
                    seen.add(room.sid)
                    task = asyncio.create_task(join_later(room))
                    joins.add(task)
                    task.add_done_callback(joins.discard)
            await asyncio.sleep(0.1)


def main() -> None:
    """Run the worker as ``python echo_worker.py start`` runs any agent (until SIGTERM or SIGINT).

    ``python echo_worker.py watch SECONDS`` runs it as an outside agent instead (:func:`watch_rooms`).
    """
    server = AgentServer(
        num_idle_processes=1,
        load_threshold=math.inf,
        host="127.0.0.1",
        port=0,
        shutdown_process_timeout=5.0,
    )
    server.rtc_session(entrypoint, agent_name=os.environ.get("KIOSK_AGENT_NAME", ""))
    server.on("worker_registered", lambda worker_id, _info: print(f"WORKER REGISTERED {worker_id}", flush=True))
    if sys.argv[1:2] == ["watch"]:
        asyncio.run(watch_rooms(server, float(sys.argv[2])))
    else:
        cli.run_app(server)


if __name__ == "__main__":
    main()
