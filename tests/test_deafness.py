"""The deaf-microphone watch: rules on a fake engine, and the real thing on a headless PulseAudio."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from kiosk.audio import AudioEngine, AudioHealthEvent
from kiosk.audio.deafness import DeafnessWatch, PulseProbe
from kiosk.audio.frames import MicFrame
from kiosk.audio.recovery import Direction
from kiosk.commands.control import request_once
from kiosk.config import AudioConfig
from tests.fixtures.audio import PulseServer
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.kiosk_process import DEVICES, KEY_ENV, ended_at_broker, kiosk_run, wait_until
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until

PULSE = {"input_device": "kiosk_pulse_mic", "output_device": "kiosk_pulse_spk"}
ZERO = np.zeros(480, np.int16)
NOISE = np.full(480, 3, np.int16)


@dataclass
class FakeProbe:
    """Answers what the test says the sound server would."""

    sources: list[str] | None = field(default_factory=lambda: ["mic.monitor"])

    sinks: list[str] | None = field(default_factory=lambda: ["spk"])

    def capture_sources(self) -> list[str] | None:
        """The scripted answer."""
        return self.sources

    def playback_sinks(self) -> list[str] | None:
        """The scripted answer."""
        return self.sinks

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class FakeEngine:
    """An input direction with a stream, a frame subscription and the health reports made."""

    input: Direction = field(default_factory=lambda: Direction("input", stream=object(), device="mic"))  # type: ignore[arg-type]
    output: Direction = field(default_factory=lambda: Direction("output", stream=object(), device="spk"))  # type: ignore[arg-type]
    subscribers: list[Callable[[MicFrame], None]] = field(default_factory=list)
    reports: list[AudioHealthEvent] = field(default_factory=list)

    def subscribe_raw_frames(self, callback: Callable[[MicFrame], None]) -> Callable[[], None]:
        """Keep the callback; the unsubscribe function drops it."""
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def report(self, event: AudioHealthEvent) -> None:
        """Record the report."""
        self.reports.append(event)

    def feed(self, pcm: np.ndarray, t: float) -> None:  # type: ignore[type-arg]
        """Hand one frame to every subscriber."""
        for callback in list(self.subscribers):
            callback(MicFrame(t=t, pcm=pcm))


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watch(engine: FakeEngine, probe: FakeProbe | None, clock: Clock, silence_s: float = 5.0) -> DeafnessWatch:
    """A watch on the fake engine."""
    return DeafnessWatch(engine=engine, probe=probe, digital_silence_s=silence_s, clock=clock)  # type: ignore[arg-type]


async def test_a_stream_moved_to_another_source_is_failed() -> None:
    """The first answer is learned; a later answer elsewhere marks the input failed, naming both sources."""
    engine, probe, clock = FakeEngine(), FakeProbe(), Clock()
    w = watch(engine, probe, clock)
    await w.check()
    assert w.expected_source == "mic.monitor" and engine.input.failed is None
    probe.sources = ["spk.monitor"]
    await w.check()
    assert engine.input.failed is not None
    assert "'spk.monitor'" in engine.input.failed and "'mic.monitor'" in engine.input.failed
    await w.stop()


async def test_a_playback_stream_moved_to_another_sink_is_failed() -> None:
    """The speaker is held to the sink it opened on: moved elsewhere, the output is failed; the input is left alone."""
    engine, probe, clock = FakeEngine(), FakeProbe(), Clock()
    w = watch(engine, probe, clock)
    await w.check()
    assert w.expected_sink == "spk" and engine.output.failed is None
    probe.sinks = ["hdmi"]
    await w.check()
    assert engine.output.failed is not None and "moved the playback stream to sink 'hdmi'" in engine.output.failed
    assert engine.input.failed is None
    await w.stop()


async def test_no_sound_server_or_no_stream_of_ours_is_not_a_fault() -> None:
    """A plain ALSA device (no pulse server, or no source output of this process) is never failed by the probe."""
    engine, clock = FakeEngine(), Clock()
    for answer in (None, []):
        w = watch(engine, FakeProbe(sources=answer), clock)
        await w.check()
        await w.check()
        assert engine.input.failed is None and w.expected_source is None
        await w.stop()


async def test_digital_silence_while_live_reopens_once_then_is_the_devices_own_mute() -> None:
    """Zeros for the limit: reopen (failed set); zeros again on the new stream, its blocks on time: the device's own
    mute, shown as muted and never reported as a failure; the first sound ends it."""
    engine, clock = FakeEngine(), Clock()
    mutes: list[bool] = []
    w = DeafnessWatch(engine=engine, probe=None, digital_silence_s=5.0, clock=clock, on_device_mute=mutes.append)  # type: ignore[arg-type]
    await w.check()
    w.arm()
    engine.feed(ZERO, clock.now)
    clock.now += 4.9
    await w.check()
    assert engine.input.failed is None
    clock.now += 0.2
    await w.check()
    assert engine.input.failed is not None and "digital silence" in engine.input.failed
    # The supervisor reopened it: a new stream, still zeros.
    engine.input.failed, engine.input.stream = None, object()  # type: ignore[assignment]
    await w.check()
    for _ in range(4):  # the agent's 25 s answer and more: never a failure
        clock.now += 5.1
        engine.feed(ZERO, clock.now)
        await w.check()
    assert engine.input.failed is None and engine.reports == []
    assert w.device_muted and mutes == [True]
    engine.feed(NOISE, clock.now)
    assert not w.device_muted and mutes == [True, False]
    await w.stop()


async def test_sound_or_an_idle_kiosk_is_never_digital_silence() -> None:
    """A single non-zero sample resets the clock; outside a live session zeros are not judged at all."""
    engine, clock = FakeEngine(), Clock()
    w = watch(engine, None, clock, silence_s=5.0)
    clock.now += 60
    await w.check()
    assert engine.input.failed is None  # not armed
    w.arm()
    for _ in range(3):
        clock.now += 4.0
        engine.feed(NOISE, clock.now)
        await w.check()
    w.disarm()
    assert not engine.subscribers
    clock.now += 60
    await w.check()
    assert engine.input.failed is None and not engine.reports
    await w.stop()


@pytest.mark.pulse
async def test_the_real_probe_sees_a_moved_stream_and_the_engine_reopens_the_configured_source(
    pulse_server: PulseServer,
) -> None:
    """pactl moves the engine's capture stream to the speaker's monitor: the watch fails it, the supervisor reopens
    the configured device, and the stream is back on ``mic.monitor``."""
    engine = AudioEngine(audio=AudioConfig(**PULSE, reopen_backoff_max_s=0.5))
    probe = PulseProbe(server=pulse_server.env["PULSE_SERVER"])
    w = DeafnessWatch(engine=engine, probe=probe, digital_silence_s=0, interval_s=0.1)
    await engine.start()
    w.start(asyncio.get_running_loop())
    try:
        await until(lambda: w.expected_source is not None, 15, "the expected source", step=0.005)
        assert w.expected_source == "mic.monitor"
        outputs = pulse_server.pactl("list", "short", "source-outputs").splitlines()
        assert len(outputs) == 1, outputs
        pulse_server.pactl("move-source-output", outputs[0].split()[0], "spk.monitor")
        await until(
            lambda: engine.input.reopens == 1 and engine.input.stream is not None,
            15,
            "one reopen of the capture stream",
            step=0.005,
        )
        assert "moved the capture stream to source 'spk.monitor'" in str(engine.input.last_error)
        # A probe of its own: a pulsectl connection is used from one thread at a time (the watch's).
        own = PulseProbe(server=pulse_server.env["PULSE_SERVER"])
        try:
            sources = await asyncio.wait_for(asyncio.to_thread(own.capture_sources), 10)
        finally:
            own.close()
        assert sources == ["mic.monitor"]
    finally:
        await w.stop()
        await engine.close()
        pulse_server.restart()  # the stream was moved between devices


@pytest.mark.pulse
def test_kiosk_run_ends_a_session_whose_mic_moved_to_the_speaker_monitor(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """The mic sink vanishes while live: PulseAudio moves the capture to ``spk.monitor``; the daemon notices, cannot
    reopen the mic, ends the session as audio_device at the broker, shows it in status, and takes the mic back on
    ``mic.monitor`` when it returns (PulseAudio itself would leave the stream on the monitor)."""
    extra = DEVICES.replace("[audio]\n", "[audio]\nreopen_backoff_max_s = 0.5\ndigital_silence_s = 0\n")
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=60, extra=extra)
    socket = tmp_path / "control.sock"
    log = tmp_path / "daemon.log"
    try:
        with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
            assert request_once(socket, {"cmd": "press"})["did"] == "started a session"
            wait_until(lambda: request_once(socket, {"cmd": "status"})["state"] == "live", 30, "live", log)
            room = request_once(socket, {"cmd": "status"})["session"]["room"]
            pulse_server.unload_sink("mic")
            last_end = wait_until(lambda: request_once(socket, {"cmd": "status"})["last_end"], 30, "the end", log)
            wait_until(lambda: ended_at_broker(sandbox, room), 20, "the broker end", log)
            status = request_once(socket, {"cmd": "status"})["audio"]["input"]
            # Down, and counted: the reopen of the configured (vanished) source fails until it is back.
            assert status["ok"] is False and status["failures"] >= 1, status
            pulse_server.load_sink("mic")
            wait_until(lambda: request_once(socket, {"cmd": "status"})["audio"]["input"]["ok"], 30, "the mic", log)
            wait_until(lambda: _capture_sources(pulse_server) == ["mic.monitor"], 10, "the stream on the mic", log)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
    finally:
        pulse_server.restart()  # the mic sink vanished and the stream was moved: a fresh server for later tests
    output = log.read_text()
    assert last_end["failure"] == "audio_device", output[-3000:]
    assert "moved the capture stream to source 'spk.monitor'" in output
    assert sandbox.api_key not in output and "Traceback" not in output


@pytest.mark.pulse
def test_kiosk_run_keeps_a_session_whose_mic_is_muted_at_the_device(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """The issue's case: the speakerphone's own mute sends exact zeros (nothing plays into the null-sink mic, whose
    stream runs on time). 25 s into the session it is still live (it ended as audio_device 15 s in before), status
    shows the microphone muted at the device, and the session then ends by silence, with no failure."""
    extra = DEVICES.replace("[audio]\n", "[audio]\ndigital_silence_s = 6.0\n")
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=35, extra=extra)
    socket = tmp_path / "control.sock"
    log = tmp_path / "daemon.log"
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
        assert request_once(socket, {"cmd": "press"})["did"] == "started a session"
        wait_until(lambda: request_once(socket, {"cmd": "status"})["state"] == "live", 30, "live", log)
        live_t = time.monotonic()
        room = request_once(socket, {"cmd": "status"})["session"]["room"]
        wait_until(lambda: request_once(socket, {"cmd": "status"})["audio"]["input_muted_by_device"], 30, "muted", log)
        # Hold until 25 s into the session: the agent's answer, which the visitor muted to listen to.
        wait_until(lambda: time.monotonic() - live_t > 25, 30, "25 s live")
        during = request_once(socket, {"cmd": "status"})
        assert during["state"] == "live", during.get("last_end")
        assert during["audio"]["input"]["ok"] is True and during["audio"]["input_muted_by_device"] is True
        last_end = wait_until(lambda: request_once(socket, {"cmd": "status"})["last_end"], 40, "the end", log)
        wait_until(lambda: ended_at_broker(sandbox, room), 20, "the broker end", log)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    output = log.read_text()
    assert last_end["reason"] == "silence" and last_end["failure"] is None, output[-3000:]
    assert "muted at the device" in output and sandbox.api_key not in output


def _capture_sources(pulse: PulseServer) -> list[str]:
    """The source names of every capture stream on the test server (pactl's short lists)."""
    names = {line.split()[0]: line.split()[1] for line in pulse.pactl("list", "short", "sources").splitlines()}
    outputs = pulse.pactl("list", "short", "source-outputs").splitlines()
    return [names.get(line.split()[1], "?") for line in outputs]
