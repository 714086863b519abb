"""Voice wake and a failed session, through the whole daemon against the sandbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk.commands.control import request_once
from kiosk.daemon.app import run
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.demo.wavio import WavStreamFactory
from kiosk.leds import pattern_for
from kiosk.session import Snapshot, State
from tests.fixtures.audio import SpeechClip
from tests.fixtures.daemon import daemon_config
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until

KEY_ENV = "KIOSK_TEST_BROKER_KEY"


async def _status_in(socket: Path, state: str) -> dict[str, Any] | None:
    """The daemon's status once its state is ``state``, else None."""
    status: dict[str, Any] = await asyncio.to_thread(request_once, socket, {"cmd": "status"})
    return status if status["state"] == state else None


async def _microphone_delivers(socket: Path) -> bool:
    """Whether the microphone stream runs and has delivered blocks (what it hears now reaches the VAD)."""
    status = await asyncio.to_thread(request_once, socket, {"cmd": "status"})
    microphone = status["audio"]["input"]
    return bool(microphone["ok"] and microphone["blocks"] > 0)


async def test_voice_wake_keeps_the_words_that_woke_it(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With voice wake on, speech starts a session; the speech before the wake reaches the agent too."""
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)
    extra = "[trigger]\nvoice_wake = true\nwake_min_speech_ms = 300\ncooldown_s = 0\n"
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=2.5, extra=extra)
    # The wake guard is not under test here: on a loaded machine the agent's greeting may overlap the visitor's
    # words, which the guard may judge talked over; give it no say in this one session.
    text = config.read_text()
    config.write_text(text.replace("[session]\n", "[session]\nwake_talkover_turns = 20\nwake_confirm_s = 600\n", 1))
    audio = WavStreamFactory(mic_wav=speech.wav, speaker_wav=None)
    summaries: list[SessionSummary] = []
    task = asyncio.create_task(
        run(config, stream_factory=audio, max_sessions=1, on_summary=summaries.append, configure_logging=False)
    )
    socket = tmp_path / "control.sock"
    await until(lambda: socket.exists() or task.done(), 20, "the control socket")
    await until(lambda: _microphone_delivers(socket), 20, "the microphone to deliver frames")
    audio.cue()
    assert await asyncio.wait_for(task, timeout=60) == 0
    [summary] = summaries
    assert summary.end_reason == "silence"
    record = await sandbox.wait_session(summary.room or "", lambda r: r["ended_at"] is not None)
    heard = record["heard"]
    spoken = len(speech.pcm(16000)) / 16000
    assert heard["preconnect_seconds"] >= 0.3, "the words that woke the kiosk were lost"
    # Speech measured by the agent's VAD excludes pauses; the whole utterance must have arrived nonetheless.
    assert heard["preconnect_seconds"] + heard["speech_seconds"] >= 0.6 * spoken, heard


async def test_agent_no_show_is_a_named_failure(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A room the agent never joins ends with agent_no_show, shows the failure code on the LED, then idles."""
    monkeypatch.setenv(KEY_ENV, sandbox.livekit_api_secret)
    config = tmp_path / "kiosk.toml"
    config.write_text(
        '[device]\nidentity = "kiosk-noshow"\n\n'
        f'[broker]\ndialect = "self"\nlivekit_url = "{sandbox.ws_url}"\nlivekit_api_key = "{sandbox.livekit_api_key}"\n'
        f'api_key_env = "{KEY_ENV}"\n\n'
        "[session]\nagent_join_timeout_s = 1.5\nerror_display_s = 1.0\n\n"
        '[leds]\nkind = "single"\npin = 18\n\n'
        f'[control]\nsocket = "{tmp_path / "control.sock"}"\n\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    pins = MockFactory(pin_class=MockPWMPin)
    audio = WavStreamFactory(mic_wav=speech.wav, speaker_wav=None)
    socket = tmp_path / "control.sock"
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, pin_factory=pins, stream_factory=audio, configure_logging=False, stop=stop))
    try:
        await until(lambda: socket.exists() or task.done(), 20, "the control socket")
        await asyncio.to_thread(request_once, socket, {"cmd": "press"})
        status = await until(lambda: _status_in(socket, "error"), 20, "the error state")
        assert status["failure"] == "agent_no_show"
        assert status["last_end"]["failure"] == "agent_no_show"
        await until(lambda: _status_in(socket, "idle"), 20, "the idle state")
        levels = [round(float(entry.state), 2) for entry in pins.pin(18).states]
        stop.set()
        assert await asyncio.wait_for(task, timeout=15) == 0
    finally:
        pins.reset()
    # What was asked of the LED, in order (not how many flashes fit in wall time; the code itself is checked in
    # tests/test_leds.py): a flash at full level while the error showed, between the idle level before and after.
    idle = round(pattern_for(Snapshot(state=State.IDLE)).level, 2)
    assert 1.0 in levels, levels
    flash = levels.index(1.0)
    assert idle in levels[:flash] and levels[-1] == idle, levels


async def test_holding_the_button_restarts_the_daemon(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With hold_action = "restart", a long press ends the session it started and exits 75 for systemd to restart."""
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)
    extra = '[trigger]\nbutton_pin = 17\nbounce_time_ms = 0\nhold_time_s = 1.0\nhold_action = "restart"\n'
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=extra)
    pins = MockFactory()
    summaries: list[SessionSummary] = []
    audio = WavStreamFactory(mic_wav=speech.wav, speaker_wav=None)
    task = asyncio.create_task(
        run(config, pin_factory=pins, stream_factory=audio, on_summary=summaries.append, configure_logging=False)
    )
    try:
        await until(lambda: (tmp_path / "control.sock").exists() or task.done(), 20, "the control socket")
        pins.pin(17).drive_low()
        code = await asyncio.wait_for(task, timeout=30)
    finally:
        pins.reset()
    assert code == 75
    [summary] = summaries
    assert summary.end_reason == "shutdown"
    record = sandbox.session(summary.room or "")
    assert record["ended_at"] is not None


async def test_a_bloated_daemon_recycles_itself_between_visitors(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past daemon.recycle_rss_mb the daemon finishes the session, then exits 75 for systemd to restart it."""
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=1.0, extra="")
    config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "info"\nrecycle_rss_mb = 1'))
    summaries: list[SessionSummary] = []
    audio = WavStreamFactory(mic_wav=speech.wav, speaker_wav=None)
    task = asyncio.create_task(run(config, stream_factory=audio, on_summary=summaries.append, configure_logging=False))
    await until(lambda: (tmp_path / "control.sock").exists() or task.done(), 20, "the control socket")
    await asyncio.to_thread(request_once, tmp_path / "control.sock", {"cmd": "press"})
    assert await asyncio.wait_for(task, timeout=60) == 75
    [summary] = summaries
    assert summary.end_reason == "silence", "the visitor's session must end normally before the restart"
    assert sandbox.session(summary.room or "")["ended_at"] is not None
