"""The daemon riding through the room's connection dropping, and ending for the reason the room gives.

The whole daemon runs in this process (WAV microphone and speaker, the sandbox over real HTTP and WebRTC). The kiosk's
own ``rtc.Room`` is made to reconnect with the SDK's ``simulate_scenario`` (a resume, or a full reconnect that
rejoins and republishes), as the official SDK's tests do; ``kiosk events`` records the states the daemon published.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import subprocess
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import rtc

from kiosk.audio import AGENT as AGENT_INPUT
from kiosk.audio import AudioEngine
from kiosk.commands.control import request_once
from kiosk.daemon.app import run
from kiosk.daemon.room import AgentRoom
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.demo.wavio import WavStreamFactory
from tests.fixtures.audio import SpeechClip
from tests.fixtures.daemon import daemon_config
from tests.fixtures.sandbox import SandboxHandle, envelope
from tests.fixtures.waiting import WaitTimeout, until

KEY_ENV = "KIOSK_TEST_BROKER_KEY"
#: The agent the test config asks for (``broker.agent_id``); ``:end_call`` or ``:stuck`` picks a sandbox behaviour.
AGENT = "test-agent"
TIMEOUT_S = 30.0


@dataclass
class Daemon:
    """A daemon running in this process; ``events`` fills from its ``kiosk events`` stream."""

    task: asyncio.Task[int]
    socket: Path
    audio: WavStreamFactory
    summaries: list[SessionSummary]
    events: list[dict[str, Any]] = field(default_factory=list)

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request."""
        return await asyncio.to_thread(request_once, self.socket, request)

    def states(self) -> list[str]:
        """The states published so far, repeats folded."""
        out: list[str] = []
        for event in list(self.events):
            if event.get("type") == "state" and (not out or out[-1] != event["state"]):
                out.append(event["state"])
        return out


@contextlib.asynccontextmanager
async def daemon(
    sandbox: SandboxHandle,
    tmp_path: Path,
    speech: SpeechClip,
    *,
    session: str = "",
    broker: str = "",
    audio: str = "",
    agent: str = AGENT,
    silence_s: float = 30.0,
) -> AsyncIterator[Daemon]:
    """The daemon, in-process, with ``kiosk events`` attached, until the block ends; then it stops. ``session``,
    ``broker`` and ``audio`` are extra lines for those sections of its config; ``agent`` is the agent it asks for."""
    config = daemon_config(
        http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=silence_s, extra=f"[audio]\n{audio}"
    )
    text = config.read_text().replace("[session]\n", f"[session]\n{session}", 1)
    text = text.replace(f'agent_id = "{AGENT}"', f'agent_id = "{agent}"')
    config.write_text(text.replace("[broker]\n", f"[broker]\n{broker}", 1))
    wavs = WavStreamFactory(mic_wav=speech.wav, speaker_wav=tmp_path / "speaker.wav")
    summaries: list[SessionSummary] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(config, stream_factory=wavs, on_summary=summaries.append, configure_logging=False, stop=stop)
    )
    handle = Daemon(task=task, socket=tmp_path / "control.sock", audio=wavs, summaries=summaries)
    reader_task: asyncio.Task[None] | None = None
    try:
        await until(lambda: handle.socket.exists() or task.done(), 20, "the control socket")
        assert not task.done(), "the daemon exited at start"
        reader, writer = await asyncio.open_unix_connection(str(handle.socket))
        writer.write(b'{"cmd": "events"}\n')
        await writer.drain()

        async def read() -> None:
            while line := await reader.readline():
                handle.events.append(json.loads(line) | {"arrived": time.monotonic()})

        reader_task = asyncio.create_task(read())
        yield handle
    finally:
        stop.set()
        try:
            assert await asyncio.wait_for(task, timeout=20) in (0, None)
        finally:
            if reader_task is not None:
                reader_task.cancel()
            wavs.close_speaker()


@pytest.fixture(autouse=True)
def _broker_key(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)


def kiosk_room() -> rtc.Room:
    """The kiosk's own connected ``rtc.Room`` (the daemon runs in this process)."""
    rooms = [o.room for o in gc.get_objects() if isinstance(o, AgentRoom) and o.room.isconnected()]
    assert len(rooms) == 1, f"expected one connected kiosk room, found {len(rooms)}"
    return rooms[0]


async def heard(sandbox: SandboxHandle, room: str) -> float:
    """Seconds of the visitor's live speech the scripted agent has answered so far."""
    record = await asyncio.to_thread(sandbox.session, room)
    return float(record["heard"]["speech_seconds"])


@pytest.mark.parametrize(
    "scenario", [rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT, rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT]
)
async def test_a_reconnect_keeps_the_session_and_the_agent_hears_the_visitor_afterwards(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip, scenario: int
) -> None:
    """The SDK reconnecting mid-call: the daemon shows reconnecting then live, the same broker session goes on, and
    the agent hears the visitor's next question."""
    async with daemon(sandbox, tmp_path, speech) as d:
        assert (await d.ask({"cmd": "press"}))["did"] == "started a session"
        await until(lambda: "live" in d.states(), TIMEOUT_S, "state live")
        status = await d.ask({"cmd": "status"})
        room = status["session"]["room"]
        await sandbox.wait_session(room, lambda r: r["heard"]["greeted"], within=TIMEOUT_S)
        d.audio.cue()
        await sandbox.wait_session(room, lambda r: r["heard"]["speech_seconds"] > 0.5, within=TIMEOUT_S)
        before = await heard(sandbox, room)
        opened = len(sandbox.sessions())

        async with asyncio.timeout(TIMEOUT_S):
            await kiosk_room().simulate_scenario(scenario)
        await until(lambda: d.states()[-2:] == ["reconnecting", "live"], TIMEOUT_S, "reconnecting, then live")

        d.audio.cue()
        await sandbox.wait_session(room, lambda r: r["heard"]["speech_seconds"] >= before + 0.5, within=TIMEOUT_S)
        after = await d.ask({"cmd": "status"})
        assert after["session"]["id"] == status["session"]["id"] and after["session"]["room"] == room
        assert after["session"]["reconnects"] == 1 and after["counters"]["reconnects"] == 1
        assert len(sandbox.sessions()) == opened, "a reconnect must not start another broker session"
        assert (await d.ask({"cmd": "press"}))["did"] == "ended the session"
        await until(lambda: d.states()[-1:] == ["idle"], TIMEOUT_S, "state idle")
    record = await sandbox.wait_session(room, lambda r: r["ended_at"] is not None)
    assert record["end_reason"] == "broker_end"
    assert d.states() == ["idle", "connecting", "live", "reconnecting", "live", "ending", "idle"][-len(d.states()) :]
    [summary] = d.summaries
    assert summary.end_reason == "control"


async def test_a_second_kiosk_with_the_same_identity_ends_the_session_as_duplicate_identity(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip
) -> None:
    """A participant joining the kiosk's room with the kiosk's identity: failure duplicate_identity, broker ended."""
    async with daemon(sandbox, tmp_path, speech) as d:
        assert (await d.ask({"cmd": "press"}))["did"] == "started a session"
        await until(lambda: "live" in d.states(), TIMEOUT_S, "state live")
        room = (await d.ask({"cmd": "status"}))["session"]["room"]
        twin = rtc.Room()
        # The twin's own connect may not finish: the kiosk's session ends at the broker, which closes the room.
        joining = asyncio.ensure_future(twin.connect(sandbox.ws_url, sandbox.mint_token("kiosk-test", room)))
        try:
            await until(lambda: "error" in d.states(), TIMEOUT_S, "state error")
            last = (await d.ask({"cmd": "status"}))["last_end"]
        finally:
            done, _ = await asyncio.wait({joining}, timeout=TIMEOUT_S)
            if joining in done and not joining.cancelled():
                joining.exception()  # a ConnectError once the room closed is expected
            async with asyncio.timeout(10):
                await twin.disconnect()
    assert (last["reason"], last["failure"]) == ("failure", "duplicate_identity")
    # The sandbox may close the session first (its last visitor left); the kiosk's broker end follows either way.
    await sandbox.wait_session(room, lambda r: r["ended_at"] is not None)


async def test_a_server_gone_silent_ends_as_network_lost_and_is_ended_at_the_broker_once_back(
    private_sandbox: tuple[SandboxHandle, subprocess.Popen[str]],
    tmp_path: Path,
    speech: SpeechClip,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole server frozen mid-call (SIGSTOP: no packet in or out, as in a blackout) for longer than
    session.network_lost_s: the session shows reconnecting, ends as network_lost, the broker end is retried until the
    server is back (SIGCONT), and the next press goes live."""
    server, process = private_sandbox
    monkeypatch.setenv(KEY_ENV, server.api_key)
    lost, retry = "network_lost_s = 3.0\n", "end_retry_max_s = 2.0\ntimeout_s = 2.0\n"
    async with daemon(server, tmp_path, speech, session=lost, broker=retry) as d:
        assert (await d.ask({"cmd": "press"}))["did"] == "started a session"
        await until(lambda: "live" in d.states(), TIMEOUT_S, "state live")
        room = (await d.ask({"cmd": "status"}))["session"]["room"]
        await server.wait_session(room, lambda r: r["heard"]["greeted"], within=TIMEOUT_S)
        process.send_signal(signal.SIGSTOP)
        try:
            # The SDK notices within livekit's 15 s ping timeout, then 3 s of reconnecting end the session.
            await until(lambda: "error" in d.states(), 60, "state error")
            status = await d.ask({"cmd": "status"})
        finally:
            process.send_signal(signal.SIGCONT)
        assert d.states()[-4:] == ["live", "reconnecting", "ending", "error"], d.states()
        assert (status["last_end"]["reason"], status["last_end"]["failure"]) == ("failure", "network_lost")
        record = await server.wait_session(room, lambda r: r["ended_at"] is not None, within=TIMEOUT_S)
        assert record["end_reason"] == "broker_end"
        await until(lambda: d.states()[-1:] == ["idle"], TIMEOUT_S, "state idle")
        assert (await d.ask({"cmd": "press"}))["did"] == "started a session"
        await until(lambda: d.states()[-1:] == ["live"], TIMEOUT_S, "state live")
        assert (await d.ask({"cmd": "press"}))["did"] == "ended the session"
        await until(lambda: d.states()[-1:] == ["idle"], TIMEOUT_S, "state idle")


def read_wav(path: Path) -> np.ndarray:
    """The samples of a 16-bit mono WAV file."""
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


def loud_runs(
    samples: np.ndarray, *, level: float = 1000.0, gap_s: float = 0.05, step_ms: int = 10
) -> list[tuple[float, float]]:
    """(start, length) in seconds of every stretch of 48 kHz ``samples`` louder than ``level`` RMS per ``step_ms``,
    bridging quiet gaps shorter than ``gap_s``."""
    step = 48 * step_ms
    loud = envelope(samples, step=step) > level
    runs: list[tuple[float, float]] = []
    start: int | None = None
    quiet = 0
    for i, on in enumerate(loud):
        if on:
            start = i if start is None else start
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet * step_ms / 1000 >= gap_s:
                runs.append((start * step_ms / 1000, (i - quiet + 1 - start) * step_ms / 1000))
                start = None
    if start is not None:
        runs.append((start * step_ms / 1000, (len(loud) - quiet - start) * step_ms / 1000))
    return runs


def tap_agent_input(wavs: WavStreamFactory) -> list[np.ndarray]:
    """Every frame the in-process daemon's mixer receives of the agent's voice, as it receives it (the daemon whose
    audio engine plays on ``wavs``: engines of earlier tests may still be alive in this process)."""
    [engine] = [o for o in gc.get_objects() if isinstance(o, AudioEngine) and o.devices._factory is wavs]
    agent = engine.mixer_input(AGENT_INPUT)
    received: list[np.ndarray] = []
    push = agent.push

    def tapped(frame: Any) -> None:
        received.append(np.array(frame, dtype=np.int16).copy())
        push(frame)

    agent.push = tapped  # type: ignore[method-assign]
    return received


async def test_the_agent_ending_the_call_plays_its_goodbye_in_full_and_ends_in_order(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip
) -> None:
    """The agent says goodbye and deletes the room (livekit-agents' EndCallTool): all of the goodbye that reached the
    kiosk is played on the speaker (before, the room's close cleared what was still queued), the end is agent_ended
    with no failure, and the broker is told."""
    # At full volume the speaker plays exactly the samples received, so both are judged by the same loudness.
    audio = "chimes = false\noutput_volume = 1.0\n"
    async with daemon(sandbox, tmp_path, speech, agent=f"{AGENT}:end_call", audio=audio) as d:
        received = tap_agent_input(d.audio)
        assert (await d.ask({"cmd": "press"}))["did"] == "started a session"
        await until(lambda: "live" in d.states(), TIMEOUT_S, "state live")
        room = (await d.ask({"cmd": "status"}))["session"]["room"]
        d.audio.cue()
        await until(lambda: d.states()[-1:] == ["idle"] and "ending" in d.states(), 60, "ending, then idle")
        last = (await d.ask({"cmd": "status"}))["last_end"]
    assert (last["reason"], last["failure"]) == ("agent_ended", None)
    assert "error" not in d.states()
    await sandbox.wait_session(room, lambda r: r["ended_at"] is not None)
    # Runs as (start, length) s, judged per 1 ms so that a split costs at most a millisecond or two at its edges.
    heard = _last_utterance(loud_runs(np.concatenate(received), step_ms=1))
    played = _last_utterance(loud_runs(read_wav(tmp_path / "speaker.wav"), step_ms=1))
    received_s, played_s = sum(length for _, length in heard), sum(length for _, length in played)
    assert received_s >= 0.5, f"the goodbye did not reach the kiosk: {heard}"
    # The goodbye is the last utterance (parts less than UTTERANCE_PAUSE_S apart). A loop late with the agent's
    # frames on a loaded machine makes the speaker re-prime, which splits a part but loses nothing, so the parts are
    # summed; what this guards is the tail the room's close used to clear.
    splits = max(0, len(played) - len(heard))
    assert played_s >= received_s - 0.03 - 0.002 * splits, (
        f"goodbye received {received_s:.3f} s, played {played_s:.3f} s ({splits} more split(s)); received runs "
        f"{heard}, played runs {played}"
    )


#: A pause between two of the agent's utterances (s): longer than any re-prime of the speaker.
UTTERANCE_PAUSE_S = 0.3


def _last_utterance(runs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The trailing ``runs`` (start, length in s) separated by less than :data:`UTTERANCE_PAUSE_S`."""
    out = runs[-1:]
    for start, length in reversed(runs[:-1]):
        if out[0][0] - (start + length) >= UTTERANCE_PAUSE_S:
            break
        out.insert(0, (start, length))
    return out


async def test_an_agent_stuck_speaking_without_audio_ends_by_silence_within_its_bound(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip
) -> None:
    """The agent claims "speaking" after the visitor's first turn and sends no audio (livekit/agents#3427): the
    session ends by silence once session.agent_stuck_s has passed, not at max_duration_s (before: at max_duration_s)."""
    stuck_s, silence_s = 5.0, 3.0
    session = f"agent_stuck_s = {stuck_s}\nmax_duration_s = 60.0\n"
    async with daemon(sandbox, tmp_path, speech, agent=f"{AGENT}:stuck", session=session, silence_s=silence_s) as d:
        assert (await d.ask({"cmd": "press"}))["did"] == "started a session"
        await until(lambda: "live" in d.states(), TIMEOUT_S, "state live")
        d.audio.cue()
        await until(lambda: d.states()[-1:] == ["idle"] and "ending" in d.states(), 40, "ending, then idle")
        last = (await d.ask({"cmd": "status"}))["last_end"]
    ending = next(e for e in d.events if e.get("state") == "ending")
    # The last "speaking" claim is the stuck one (the greeting and the answer to the first turn came before it).
    stuck = [e for e in d.events if e.get("agent") == "speaking"][-1]
    assert (last["reason"], last["failure"]) == ("silence", None)
    waited = ending["arrived"] - stuck["arrived"]
    assert stuck_s - 0.5 <= waited <= stuck_s + silence_s, f"ended {waited:.1f} s after the stuck claim"


@pytest.mark.parametrize(
    "scenario",
    [rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT, rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT],
    ids=["resume", "full_reconnect"],
)
async def test_words_spoken_while_the_room_reconnects_reach_the_agent_once(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip, scenario: int
) -> None:
    """The visitor speaks through a reconnect: what they said while the link was down is held and reaches the agent
    when the room is back (live after a resume, as a pre-connect buffer after a full reconnect), and no more than
    they said (nothing twice)."""
    spoken = len(speech.pcm()) / 48000
    async with daemon(sandbox, tmp_path, speech) as d:
        assert (await d.ask({"cmd": "press"}))["did"] == "started a session"
        await until(lambda: "live" in d.states(), TIMEOUT_S, "state live")
        room = (await d.ask({"cmd": "status"}))["session"]["room"]
        await sandbox.wait_session(room, lambda r: r["heard"]["greeted"], within=TIMEOUT_S)
        first = await sandbox.wait_session(room, lambda r: r["heard"]["preconnect_seconds"] > 0, within=TIMEOUT_S)
        before = first["heard"]["speech_seconds"] + first["heard"]["preconnect_seconds"]
        d.audio.cue()
        async with asyncio.timeout(TIMEOUT_S):
            await kiosk_room().simulate_scenario(scenario)
        await until(lambda: d.states()[-2:] == ["reconnecting", "live"], TIMEOUT_S, "reconnecting, then live")

        def total(r: dict[str, Any]) -> float:
            return float(r["heard"]["speech_seconds"] + r["heard"]["preconnect_seconds"]) - before

        try:
            record = await sandbox.wait_session(room, lambda r: total(r) >= 0.75 * spoken, within=TIMEOUT_S)
        except WaitTimeout:
            heard_now = (await asyncio.to_thread(sandbox.session, room))["heard"]
            raise AssertionError(
                f"the agent heard {heard_now} within {TIMEOUT_S:g} s (before the reconnect: {before:.2f} s; "
                f"spoken {spoken:.2f} s); states {d.states()}"
            ) from None
        assert total(record) <= spoken + 1.0, f"heard {total(record):.1f} s of {spoken:.1f} s spoken"
        assert (await d.ask({"cmd": "press"}))["did"] == "ended the session"
        await until(lambda: d.states()[-1:] == ["idle"], TIMEOUT_S, "state idle")
