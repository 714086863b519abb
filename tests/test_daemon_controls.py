"""Volume and mute buttons and the LED ring through the whole daemon: mock pins, mock SPI, the sandbox, a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.commands.control import request_once
from kiosk.daemon.app import run
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.daemon.volume_mute import STATE_FILE
from kiosk.demo.wavio import WavStreamFactory
from tests.fixtures.audio import SpeechClip
from tests.fixtures.daemon import daemon_config
from tests.fixtures.ring import RingProbe, pixels
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until

KEY_ENV = "KIOSK_TEST_BROKER_KEY"
PINS = "[trigger]\nbutton_pin = 17\nvolume_up_pin = 22\nvolume_down_pin = 23\nmute_pin = 24\nbounce_time_ms = 0\n\n"
METRICS = '[metrics]\nlisten = "127.0.0.1:0"\n\n'
RING = '[leds]\nkind = "apa102"\nbrightness = 1.0\n\n[leds.ring]\ncount = 3\nspi_port = 0\nspi_device = 1\n'


def press(pins: MockFactory, pin: int) -> None:
    """Press and release a pull-up button."""
    pins.pin(pin).drive_low()
    pins.pin(pin).drive_high()


class Events:
    """``kiosk events`` over the control socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def follow(cls, socket: Path) -> Events:
        """Connect and ask for the stream."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket)), 5)
        writer.write(b'{"cmd": "events"}\n')
        await writer.drain()
        # Subscribed once the daemon answered: events after this line reach us.
        ack = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert ack.get("streaming") == "events", ack
        return cls(reader, writer)

    async def next_controls(self) -> dict[str, Any]:
        """The next volume/mute event."""
        async with asyncio.timeout(10):
            while True:
                event = json.loads(await self.reader.readline())
                if event.get("type") == "controls":
                    return dict(event)

    def close(self) -> None:
        """Hang up."""
        self.writer.close()


async def status(socket: Path) -> dict[str, Any]:
    """``kiosk status --json``."""
    return await asyncio.to_thread(request_once, socket, {"cmd": "status"})


async def _with_metrics(socket: Path) -> dict[str, Any] | None:
    """The status once it names the metrics listener (the control socket answers before it is up), else None."""
    answer = await status(socket)
    return answer if "metrics" in answer else None


async def _in_state(socket: Path, state: str) -> bool:
    """Whether the daemon's state is ``state``."""
    return bool((await status(socket))["state"] == state)


async def test_volume_and_mute_buttons_ring_and_restart(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip, monkeypatch: pytest.MonkeyPatch, mock_pins: MockFactory
) -> None:
    """Volume steps and mute reach status, events, the ring and the state file; a muted session sends no speech."""
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)
    config = daemon_config(
        http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=2.5, extra=PINS + METRICS + RING
    )
    socket = tmp_path / "control.sock"
    ring = RingProbe(clock=11, data=10, select=7, factory=mock_pins)
    audio = WavStreamFactory(mic_wav=speech.wav, speaker_wav=None)
    summaries: list[SessionSummary] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(
            config,
            pin_factory=mock_pins,
            stream_factory=audio,
            on_summary=summaries.append,
            configure_logging=False,
            stop=stop,
        )
    )
    try:
        await until(lambda: socket.exists() or task.done(), 20, "the control socket")
        first = await status(socket)
        # The control socket answers before the metrics listener is up (READY comes after both).
        first = await until(lambda: _with_metrics(socket), 20, "the metrics listener in the status")
        assert (first["volume"], first["muted"]) == (0.8, False)
        assert first["audio"]["echo_cancellation"]["enabled"] is True
        assert "different devices" in first["audio"]["echo_cancellation"]["why"]
        events = await Events.follow(socket)
        press(mock_pins, 23)
        assert await events.next_controls() == {"type": "controls", "volume": 0.7, "muted": False}
        press(mock_pins, 22)
        press(mock_pins, 22)
        await events.next_controls()
        assert await events.next_controls() == {"type": "controls", "volume": 0.9, "muted": False}
        press(mock_pins, 23)
        assert (await events.next_controls())["volume"] == 0.8
        shown = len(ring.frames)
        press(mock_pins, 24)
        assert await events.next_controls() == {"type": "controls", "volume": 0.8, "muted": True}
        frames = await asyncio.to_thread(ring.wait_frames, shown + 1)
        assert any(pixels(f, 3)[0] == (153, 0, 0) for f in frames[shown:]), "muted: red on the ring"
        # The exporter samples the engine every few seconds: scrape until the mute is in.
        async with httpx.AsyncClient() as client:

            async def scrape_muted() -> str | None:
                text = (await client.get(first["metrics"])).text
                return text if "kiosk_microphone_muted 1.0" in text else None

            scraped = await until(scrape_muted, 20, "kiosk_microphone_muted 1.0 in a scrape", step=0.2)
        assert "kiosk_output_volume 0.8" in scraped
        assert "kiosk_echo_cancellation_enabled 1.0" in scraped
        events.close()

        # A session while muted: the visitor's speech must not reach the agent.
        press(mock_pins, 17)
        await until(lambda: _in_state(socket, "live"), 20, "the session to be live")
        audio.cue()
        await until(lambda: len(summaries) == 1 or task.done(), 60, "a session summary")
        [summary] = summaries
        record = await sandbox.wait_session(summary.room or "", lambda r: r["ended_at"] is not None)
        assert record["heard"]["speech_seconds"] == 0.0, record["heard"]
    finally:
        stop.set()
        code = await asyncio.wait_for(task, timeout=30)
    assert code == 0
    assert json.loads((tmp_path / "state" / STATE_FILE).read_text()) == {"volume": 0.8, "muted": True}
    assert pixels(ring.frames[-1], 3) == [(0, 0, 0)] * 3, "the ring is off once the daemon stopped"

    # A restart keeps the volume and the mute.
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(config, pin_factory=mock_pins, stream_factory=audio, configure_logging=False, stop=stop)
    )
    try:
        await until(lambda: socket.exists() or task.done(), 20, "the control socket")
        again = await status(socket)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, timeout=30) == 0
        ring.close()
    assert (again["volume"], again["muted"]) == (0.8, True)
