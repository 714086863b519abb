"""Press-to-live, first words kept and silence-end precision: the daemon in this process against a baseline client.

The kiosk side is ``kiosk.daemon.app.run()`` with a gpiozero ``MockFactory`` button and the WAV microphone
(:class:`kiosk.demo.wavio.WavStreamFactory`, paced in real time): the speech starts at the instant of the press.
The baseline is the least a client can do: the same broker POST, ``rtc.Room.connect``, ``publish_track`` and then
the speech as it is being spoken (no pre-roll, no pre-connect buffer). Sessions alternate, baseline then kiosk, so
both see the same machine and sandbox. Latency ends when the sandbox agent first has the visitor's speech: the first
audible live frame (its record's ``first_audio_at``) or, for the kiosk, the pre-connect buffer it took, when that
came first (``preconnect_at``); CLOCK_MONOTONIC like ``time.monotonic()`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from gpiozero.pins.mock import MockFactory
from livekit import rtc

from bench.common import RATE, Samples, Sandbox, kiosk_config, read_wav, write_wav
from bench.firstwords import kept_fraction
from kiosk.commands.control import request_once
from kiosk.daemon.app import run
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.demo.wavio import WavStreamFactory

KEY_ENV = "KIOSK_BENCH_BROKER_KEY"
KIOSK_ID = "kiosk-bench"
BASELINE_ID = "bench-baseline"
PIN = 17
STEP_S = 20.0
#: After the speech, the session waits this long before the button ends it (when it does not wait for silence).
TAIL_S = 0.6


@dataclasses.dataclass
class Sample:
    """One measured session."""

    who: str
    room: str
    #: None when the agent never had the visitor's speech (it joined after a client without pre-roll stopped).
    press_to_audio_ms: float | None
    press_to_connected_ms: float | None = None
    preconnect_arrival_ms: float | None = None
    kept: float | None = None
    silence_lateness_s: float | None = None
    offsets: list[int | None] = dataclasses.field(default_factory=list)


async def _wait_record(sb: Sandbox, room: str, key: str, within: float = STEP_S) -> dict[str, Any]:
    """Wait until the record of ``room`` has a truthy ``heard[key]`` (or top-level ``key``)."""

    def ready(r: dict[str, Any]) -> bool:
        return bool(r["heard"].get(key) if key in r["heard"] else r.get(key))

    return await asyncio.to_thread(sb.wait_session, room, ready, within)


def _since(at: float | None, t0: float) -> float | None:
    """Milliseconds from ``t0`` to ``at`` (both ``time.monotonic()``), or None when ``at`` never came."""
    return None if at is None else (at - t0) * 1000


def _first_audio(heard: dict[str, Any]) -> float | None:
    """When the agent first had the visitor's speech: a taken pre-connect buffer or the first audible live frame."""
    times = [heard.get("first_audio_at")]
    if heard.get("preconnect_seconds"):
        times.append(heard.get("preconnect_at"))
    known = [t for t in times if t is not None]
    return min(known) if known else None


async def _new_room(sb: Sandbox, identity: str, known: set[str], within: float = STEP_S) -> str:
    """The room of the first session of ``identity`` not in ``known``."""
    async with asyncio.timeout(within):
        while True:
            records = await asyncio.to_thread(sb.sessions)
            for record in records:
                if record["identity"] == identity and record["room"] not in known:
                    known.add(record["room"])
                    return str(record["room"])
            await asyncio.sleep(0.05)


def _parts(record: dict[str, Any]) -> list[Samples]:
    """What the agent received: the pre-connect buffer (head of its WAV) and the live stream."""
    heard = record["heard"]
    parts: list[Samples] = []
    if heard.get("preconnect_seconds") and heard.get("wav_path"):
        samples, rate = read_wav(Path(heard["wav_path"]))
        parts.append(samples[: round(heard["preconnect_seconds"] * rate)])
    if heard.get("live_wav_path"):
        parts.append(read_wav(Path(heard["live_wav_path"]))[0])
    return parts


async def _settled_record(sb: Sandbox, room: str) -> dict[str, Any]:
    """The record once the broker ended it and the agent wrote what it received."""
    await _wait_record(sb, room, "ended_at")
    record = await _wait_record(sb, room, "live_wav_path")
    await asyncio.sleep(0.3)  # the agent rewrites its files as it leaves
    return (await asyncio.to_thread(sb.session, room)) or record


async def baseline_session(client: httpx.AsyncClient, sb: Sandbox, speech48: Samples, known: set[str]) -> Sample:
    """One minimal client session: broker POST, connect, publish, speak from 'now' on; end at the broker."""
    t0 = time.monotonic()
    response = await client.post(
        f"{sb.http_url}/v1/sessions/start",
        json={"userIdentity": BASELINE_ID, "agentId": "bench-agent", "agentConfig": {}},
        headers={"x-api-key": sb.api_key},
    )
    data = response.json()
    room = rtc.Room()
    source = rtc.AudioSource(RATE, 1, queue_size_ms=200)
    try:
        async with asyncio.timeout(STEP_S):
            await room.connect(data["livekitUrl"], data["userToken"], rtc.RoomOptions(auto_subscribe=True))
            track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await room.local_participant.publish_track(track, options)
        connected = time.monotonic()
        frame = RATE // 100
        end = len(speech48) + int(TAIL_S * RATE)
        padded = np.concatenate([speech48, np.zeros(end - len(speech48) + frame, np.int16)])
        # the visitor has been speaking since t0: send what is being said now, in real time
        position = int((time.monotonic() - t0) * RATE) // frame * frame
        due = time.monotonic()
        async with asyncio.timeout(STEP_S):
            while position < end:
                chunk = padded[position : position + frame]
                await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, frame))
                position += frame
                due += 0.01
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        await client.post(
            f"{sb.http_url}/v1/sessions/end", json={"roomName": data["roomName"]}, headers={"x-api-key": sb.api_key}
        )
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(room.disconnect(), 5)
        await source.aclose()
    known.add(data["roomName"])
    record = await _settled_record(sb, data["roomName"])
    kept, offsets = kept_fraction(_to16(speech48), _parts(record))
    return Sample(
        who="baseline",
        room=data["roomName"],
        press_to_audio_ms=_since(record["heard"]["first_audio_at"], t0),
        press_to_connected_ms=(connected - t0) * 1000,
        kept=kept,
        offsets=offsets,
    )


def _to16(samples48: Samples) -> Samples:
    """48 kHz to 16 kHz by 3:1 averaging (enough for loudness alignment)."""
    n = len(samples48) // 3 * 3
    out: Samples = samples48[:n].astype(np.int32).reshape(-1, 3).mean(axis=1).astype(np.int16)
    return out


class KioskUnderTest:
    """The daemon's ``run()`` on this loop with a mock button and the WAV microphone."""

    def __init__(
        self,
        *,
        sb: Sandbox,
        workdir: Path,
        speech48: Samples,
        silence_s: float,
        audio: str = "",
        agent_join_s: float = 10.0,
    ) -> None:
        self._sb = sb
        self._speech48 = speech48
        mic = write_wav(workdir / "mic.wav", speech48)
        os.environ[KEY_ENV] = sb.api_key
        extra = f"[trigger]\nbutton_pin = {PIN}\nbounce_time_ms = 0\n\n[audio]\n{audio}"
        self.config = kiosk_config(
            sb=sb, workdir=workdir, key_env=KEY_ENV, silence_s=silence_s, agent_join_s=agent_join_s, extra=extra
        )
        self.pins = MockFactory()
        self.audio = WavStreamFactory(mic_wav=mic, speaker_wav=None)
        self.summaries: asyncio.Queue[SessionSummary] = asyncio.Queue()
        self._task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        """Start the daemon and wait until its control socket exists (it is ready then)."""
        self._task = asyncio.get_running_loop().create_task(
            run(
                self.config,
                pin_factory=self.pins,
                stream_factory=self.audio,
                on_summary=self.summaries.put_nowait,
                configure_logging=False,
            )
        )
        socket = self.config.parent / "control.sock"
        async with asyncio.timeout(STEP_S):
            while not socket.exists():
                if self._task.done():
                    raise RuntimeError(f"the daemon exited with {self._task.result()}")
                await asyncio.sleep(0.05)

    def press(self) -> None:
        """A tap on the mock button."""
        pin = self.pins.pin(PIN)
        pin.drive_low()
        pin.drive_high()

    async def session(self, known: set[str], *, wait_for_silence: bool) -> Sample:
        """Speak from the press on; end by silence or by a second press after the speech."""
        t0 = time.monotonic()
        self.audio.cue()
        self.press()
        # The daemon says which room and when it is live. Polling the sandbox instead (every record, 50 times a
        # second) would load the very server the kiosk is connecting to, which the baseline session does not do.
        live = await self._status_until(lambda s: s.get("state") == "live" and (s.get("session") or {}).get("room"))
        room = str(live["session"]["room"])
        known.add(room)
        if not wait_for_silence:
            await asyncio.sleep(max(0.0, t0 + len(self._speech48) / RATE + TAIL_S - time.monotonic()))
            self.press()
        summary = await asyncio.wait_for(self.summaries.get(), 60)
        record = await _settled_record(self._sb, room)
        heard = record["heard"]
        kept, offsets = kept_fraction(_to16(self._speech48), _parts(record))
        return Sample(
            who="kiosk",
            room=room,
            press_to_audio_ms=_since(_first_audio(heard), t0),
            press_to_connected_ms=summary.press_to_live_ms,
            preconnect_arrival_ms=(heard["preconnect_at"] - t0) * 1000 if heard.get("preconnect_at") else None,
            kept=kept,
            silence_lateness_s=summary.silence_lateness_s if summary.end_reason == "silence" else None,
            offsets=offsets,
        )

    async def _status_until(self, predicate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Poll the daemon's ``status`` on its control socket until ``predicate`` holds (TimeoutError after a step)."""
        socket = self.config.parent / "control.sock"
        async with asyncio.timeout(STEP_S):
            while True:
                status = await asyncio.to_thread(request_once, socket, {"cmd": "status"})
                if predicate(status):
                    return status
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop the daemon as systemd does, with SIGTERM (``run()`` handles it on this loop)."""
        if self._task is None:
            return
        if not self._task.done():
            os.kill(os.getpid(), signal.SIGTERM)
        try:
            await asyncio.wait_for(self._task, 15)
        except TimeoutError:
            self._task.cancel()
        self.pins.reset()


async def measure(
    *,
    sb: Sandbox,
    workdir: Path,
    speech48: Samples,
    sessions: int,
    silence_every: int,
    silence_s: float,
    audio: str = "",
) -> dict[str, list[Sample]]:
    """Alternate baseline and kiosk sessions (one warm-up each, not counted); return the samples."""
    kiosk = KioskUnderTest(sb=sb, workdir=workdir, speech48=speech48, silence_s=silence_s, audio=audio)
    await kiosk.start()
    known: set[str] = set()
    out: dict[str, list[Sample]] = {"baseline": [], "kiosk": []}
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for i in range(sessions + 1):
                base = await baseline_session(client, sb, speech48, known)
                wait = silence_every > 0 and i % silence_every == 0
                mine = await kiosk.session(known, wait_for_silence=wait)
                if i > 0:
                    out["baseline"].append(base)
                    out["kiosk"].append(mine)
    finally:
        await kiosk.stop()
    return out
