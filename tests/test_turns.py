"""Turn latency: the visitor's end of speech (the kiosk's VAD) to the agent's first sound at the speaker."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kiosk.audio.frames import SAMPLE_RATE
from kiosk.audio.mixer import Mixer
from kiosk.audio.turns import AUDIBLE_PEAK, TURN_MAX_S, Turn, TurnTimer
from kiosk.commands.control import request_once
from kiosk.daemon.app import run
from kiosk.demo.wavio import WavStreamFactory
from kiosk_sandbox.agent import THINK_S
from tests.fixtures.daemon import daemon_config
from tests.fixtures.metrics import parse, value
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until

KEY_ENV = "KIOSK_TEST_BROKER_KEY"
#: The sandbox agent ends a turn after 20 unvoiced 30 ms frames (``kiosk_sandbox.agent_audio.TurnDetector``).
END_OF_TURN_S = 0.6
#: Its voice detector and the kiosk's may place the last voiced frame a few frames apart.
SLACK_MS = 150


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _timer(delay_s: float = 0.0) -> tuple[TurnTimer, Clock, list[Turn]]:
    clock = Clock()
    timer = TurnTimer(clock=clock, speaker_delay=lambda: delay_s)
    turns: list[Turn] = []
    timer.subscribe(turns.append)
    timer.arm()
    clock.now -= 30
    timer.agent_audio(_chunk(0))  # the greeting
    clock.now += 30
    return timer, clock, turns


def _chunk(loud_from: int | None, n: int = 1440) -> np.ndarray:
    pcm = np.zeros(n, np.int16)
    if loud_from is not None:
        pcm[loud_from:] = 3000
    return pcm


def test_the_latency_runs_from_the_last_voiced_frame_to_the_sound_at_the_speaker() -> None:
    """Mixed 1.2 s after the speech ended, 480 samples into the chunk, 70 ms queued ahead: 1.28 s at the speaker."""
    timer, clock, turns = _timer(delay_s=0.07)
    timer.speech_ended(clock.now)
    clock.now += 1.2
    timer.agent_audio(_chunk(None))  # the agent's decoded silence is not its answer
    assert turns == []
    timer.agent_audio(_chunk(480))
    [turn] = turns
    assert turn.latency_s == pytest.approx(1.2 + 0.07 + 480 / SAMPLE_RATE)
    timer.agent_audio(_chunk(0))  # the rest of the answer is the same turn
    assert len(turns) == 1
    assert timer.status() == {"turns": 1, "last_ms": 1280, "p50_ms": 1280}


def test_an_answer_mixed_during_the_detectors_hang_over_is_timed_when_the_end_of_speech_is_known() -> None:
    """The offset is decided 0.5 s after the last voiced frame; the answer was mixed 0.1 s before that, for the speaker
    0.2 s later: 0.6 s. The visitor then speaking over the rest of that answer is no new turn."""
    timer, clock, turns = _timer(delay_s=0.2)
    speech_end = clock.now
    clock.now += 0.4
    timer.agent_audio(_chunk(0))
    clock.now += 0.1
    timer.speech_ended(speech_end)
    assert [round(t.latency_s, 3) for t in turns] == [0.6]
    timer.speech_began()
    for _ in range(20):  # the answer goes on, 30 ms a chunk, while the visitor speaks over it
        clock.now += 0.03
        timer.agent_audio(_chunk(0))
    timer.speech_ended(clock.now - 0.1)
    assert len(turns) == 1


def test_the_greeting_is_no_answer_even_right_after_the_first_words() -> None:
    """The visitor speaks from the press; the greeting begins 0.1 s after their first words: no turn."""
    clock = Clock()
    timer = TurnTimer(clock=clock, speaker_delay=lambda: 0.0)
    timer.arm()
    timer.speech_ended(clock.now)
    clock.now += 0.1
    timer.agent_audio(_chunk(0))
    assert timer.turns == []
    clock.now += 3
    timer.speech_ended(clock.now)  # the question, after the greeting
    clock.now += 1.5
    timer.agent_audio(_chunk(0))
    assert [round(t.latency_s, 3) for t in timer.turns] == [1.5]


def test_speaking_again_before_the_answer_makes_one_longer_turn() -> None:
    """A pause, then more words: only the last end of speech counts."""
    timer, clock, turns = _timer()
    timer.speech_ended(clock.now)
    clock.now += 0.5
    timer.speech_began()
    clock.now += 2.0
    timer.speech_ended(clock.now)
    clock.now += 0.9
    timer.agent_audio(_chunk(0))
    assert [round(t.latency_s, 3) for t in turns] == [0.9]


def test_no_turn_is_timed_while_disarmed_nor_later_than_the_bound() -> None:
    """Disarmed (no live session) nothing is timed; an answer later than TURN_MAX_S is no answer."""
    timer, clock, turns = _timer()
    timer.disarm()
    timer.speech_ended(clock.now)
    clock.now += 1.0
    timer.agent_audio(_chunk(0))
    timer.arm()
    timer.agent_audio(_chunk(0))  # the greeting
    clock.now += 5.0
    timer.speech_ended(clock.now)
    clock.now += TURN_MAX_S + 1
    timer.agent_audio(_chunk(0))
    assert turns == []
    assert timer.status() == {"turns": 0, "last_ms": None, "p50_ms": None}


def test_sound_that_began_before_the_end_of_speech_is_no_answer() -> None:
    """The agent talks on, without a pause, while the visitor stops: the answer is its next utterance, 0.8 s after
    its sound paused."""
    timer, clock, turns = _timer()
    speech_end = clock.now + 0.1
    for _ in range(30):  # 0.9 s of the agent talking, across the end of speech
        timer.agent_audio(_chunk(0))
        clock.now += 0.03
    timer.speech_ended(speech_end)
    assert turns == []
    clock.now += 0.8
    timer.agent_audio(_chunk(0))
    [turn] = turns
    assert turn.latency_s == pytest.approx(clock.now - speech_end)


def test_a_new_session_starts_its_own_figures_and_the_median_is_of_that_session() -> None:
    """Arming again forgets the previous session's turns; status shows the last and the median of this one."""
    timer, clock, _ = _timer()
    for latency in (0.8, 2.0, 1.0):
        clock.now += 10
        timer.speech_ended(clock.now)
        clock.now += latency
        timer.agent_audio(_chunk(0))
    assert timer.status() == {"turns": 3, "last_ms": 1000, "p50_ms": 1000}
    timer.disarm()
    assert timer.status()["turns"] == 3  # the last session's, until the next one is live
    timer.arm()
    assert timer.status()["turns"] == 0


def test_the_mixer_hands_the_agent_input_to_its_listener() -> None:
    """The engine's wiring: every chunk the mixer takes from the agent input reaches the timer, quiet ones too."""
    mixer = Mixer(volume=1.0)
    agent = mixer.add_input("agent", prime_ms=0)
    heard: list[int] = []
    agent.listener = lambda pcm: heard.append(int(np.abs(pcm.astype(np.int32)).max()))
    agent.push(np.full(960, AUDIBLE_PEAK * 3, np.int16))
    mixer.mix(480)
    mixer.mix(480)
    assert heard == [AUDIBLE_PEAK * 3, AUDIBLE_PEAK * 3]


@pytest.fixture
def question(tmp_path: Path) -> Path:
    """One short question without a pause inside (espeak-ng), as a WAV file."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed to make test speech")
    wav = tmp_path / "question.wav"
    subprocess.run(["espeak-ng", "-s", "160", "-w", str(wav), "Where is the library?"], check=True, timeout=30)
    return wav


async def test_one_question_after_the_greeting_is_one_turn_in_status_and_metrics(
    sandbox: SandboxHandle, tmp_path: Path, question: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live session with the sandbox's agent: the visitor asks one short question once the greeting is over.

    The kiosk times exactly one turn, in ``kiosk status`` and in ``kiosk_turn_latency_seconds``, and no shorter
    than the agent itself took: its end of turn (a 0.6 s pause, ``TurnDetector``) and its think time (``THINK_S``).
    """
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)
    extra = '[metrics]\nlisten = "127.0.0.1:0"\n'
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=20.0, extra=extra)
    control = tmp_path / "control.sock"
    audio = WavStreamFactory(mic_wav=question, speaker_wav=None)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run(config, stream_factory=audio, configure_logging=False, stop=stop))

    async def status() -> dict[str, Any]:
        answer: dict[str, Any] = await asyncio.to_thread(request_once, control, {"cmd": "status"})
        return answer

    try:
        await until(lambda: control.exists() or daemon.done(), 20, "the control socket")
        await asyncio.to_thread(request_once, control, {"cmd": "press"})
        live = await until_status(status, lambda s: s["state"] == "live" and s["session"]["room"], "live")
        room = live["session"]["room"]
        await sandbox.wait_session(room, lambda r: r["heard"]["greeted"])
        await until_status(status, lambda s: s["agent"] == "listening", "the agent to listen after its greeting")
        audio.cue()
        timed = await until_status(status, lambda s: s["turn_latency"]["turns"] >= 1, "a timed turn")
        record = await sandbox.wait_session(room, lambda r: r["heard"]["turns"] >= 1)
        scraped = parse((await asyncio.to_thread(httpx.get, timed["metrics"], timeout=10)).text)
    finally:
        stop.set()
        code = await asyncio.wait_for(daemon, timeout=30)
    assert code == 0
    turns = timed["turn_latency"]
    assert turns["turns"] == 1 and record["heard"]["turns"] == 1, (turns, record["heard"])
    assert value(scraped, "kiosk_turn_latency_seconds_count") == 1
    agent_took_ms = (END_OF_TURN_S + THINK_S) * 1000
    assert turns["last_ms"] >= agent_took_ms - SLACK_MS, turns
    assert value(scraped, "kiosk_turn_latency_seconds_sum") == pytest.approx(turns["last_ms"] / 1000, abs=0.001)


async def until_status(
    status: Callable[[], Awaitable[dict[str, Any]]], condition: Callable[[dict[str, Any]], Any], what: str
) -> dict[str, Any]:
    """Poll ``kiosk status`` until ``condition`` holds; return that status."""

    async def check() -> dict[str, Any] | None:
        found = await status()
        return found if condition(found) else None

    found: dict[str, Any] = await until(check, 30, what)
    return found
