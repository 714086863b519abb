"""The whole daemon in this process: gpiozero mock pins, WAV microphone, the sandbox over real HTTP and WebRTC.

A press on the mock button starts a session; the visitor's words (spoken from the press on, while the kiosk connects)
reach the agent as a pre-connect buffer plus live audio; silence ends the session within the timeout plus a tick;
the broker records the end; the LED pin follows the states; systemd hears READY, STATUS, WATCHDOG and STOPPING.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk.daemon.app import run
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.demo.wavio import WavStreamFactory
from tests.fixtures.audio import SpeechClip
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until

KEY_ENV = "KIOSK_TEST_BROKER_KEY"
SILENCE_S = 3.0


async def test_press_talk_silence_end(
    sandbox: SandboxHandle,
    tmp_path: Path,
    speech: SpeechClip,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Press, first words kept, agent heard and played, silence ends it, broker ended, LEDs and systemd follow."""
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    extra = '[trigger]\nbutton_pin = 17\nbounce_time_ms = 0\n\n[leds]\nkind = "single"\npin = 18\n'
    config = daemon_config(
        http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=SILENCE_S, extra=extra
    )
    pins = MockFactory(pin_class=MockPWMPin)
    speaker = tmp_path / "speaker.wav"
    audio = WavStreamFactory(mic_wav=speech.wav, speaker_wav=speaker)
    summaries: list[SessionSummary] = []
    daemon = asyncio.create_task(
        run(
            config,
            pin_factory=pins,
            stream_factory=audio,
            max_sessions=1,
            on_summary=summaries.append,
            configure_logging=False,
        )
    )
    try:
        await until(lambda: "READY=1" in notify_socket.lines() or daemon.done(), 20, "READY=1")
        assert not daemon.done(), "the daemon exited before it was ready"
        audio.cue()  # the visitor starts speaking as they press
        pins.pin(17).drive_low()
        pins.pin(17).drive_high()
        code = await asyncio.wait_for(daemon, timeout=60)
        led = [round(float(entry.state), 3) for entry in pins.pin(18).states]
    finally:
        audio.close_speaker()
        pins.reset()
    assert code == 0
    [summary] = summaries
    assert summary.end_reason == "silence"
    assert summary.press_to_live_ms is not None and summary.press_to_live_ms < 10_000
    assert summary.silence_lateness_s is not None and 0 <= summary.silence_lateness_s <= 1.0
    assert summary.preconnect_s > 0.1, "the words spoken while connecting were not kept"

    record = await sandbox.wait_session(summary.room or "", lambda r: r["ended_at"] is not None)
    assert record["end_reason"] == "broker_end"
    heard = record["heard"]
    assert heard["preconnect_seconds"] > 0.1
    assert heard["preconnect_mime_type"] == "audio/ogg;codecs=opus", heard  # the scripted agent decoded Opus
    assert heard["speech_seconds"] + heard["preconnect_seconds"] >= 2.0, heard

    # The agent's greeting reached the speaker.
    with wave.open(str(speaker)) as wav:
        played = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32)
    assert float(np.sqrt(np.mean(played**2))) > 100

    lines = notify_socket.lines()
    for expected in ("READY=1", "WATCHDOG=1", "STOPPING=1"):
        assert expected in lines
    statuses = [line for line in lines if line.startswith("STATUS=")]
    assert any(s.startswith("STATUS=connecting") for s in statuses)
    assert any(s.startswith("STATUS=live") for s in statuses)
    assert any(s.startswith("STATUS=ending") and "silence" in s for s in statuses)

    # The LED: dim when idle (0.15), blinking while connecting (1.0/0.0), steady full when the agent listens,
    # half-bright blinking while ending, dim again when idle.
    assert led[1] == 0.15
    first_full = led.index(1.0)
    assert 0.0 in led[first_full:], "no blink while connecting"
    assert led[-1] == 0.0  # closed at shutdown
    assert 0.5 in led, "no ending blink"
