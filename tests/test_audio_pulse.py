"""The audio engine in real time through a headless PulseAudio: speech in, sound out, a device pulled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from kiosk.audio import AGENT, AudioEngine, AudioHealthEvent, MicFrame, VadEvent, VadEventKind
from kiosk.audio.deafness import DeafnessWatch, PulseProbe
from kiosk.config import AudioConfig, TriggerConfig
from tests.fixtures.audio import AUDIO_DIR, PulseServer, SpeechClip
from tests.fixtures.waiting import until

pytestmark = pytest.mark.pulse

PULSE = {"input_device": "kiosk_pulse_mic", "output_device": "kiosk_pulse_spk"}


async def test_speech_played_into_the_mic_wakes_the_kiosk(pulse_server: PulseServer, speech: SpeechClip) -> None:
    """espeak speech played into the mic sink is captured live and gives an onset, then a wake."""
    engine = AudioEngine(audio=AudioConfig(**PULSE), trigger=TriggerConfig(voice_wake=True))
    events: list[VadEvent] = []
    engine.subscribe_vad(events.append)
    await engine.start()
    player = pulse_server.play(speech.wav)
    try:
        await until(lambda: any(e.kind == VadEventKind.WAKE for e in events), 15, "a wake event", step=0.005)
    finally:
        player.terminate()
        player.wait(timeout=5)
        await engine.close()
    kinds = [e.kind for e in events]
    assert kinds.index(VadEventKind.ONSET) < kinds.index(VadEventKind.WAKE)
    assert engine.health().input.blocks > 0


def _loud_samples(recording: Path) -> int:
    """How many samples of the recording so far are loud (over 3000 of 32767: the tone, not the noise)."""
    heard = np.fromfile(recording, dtype="<i2")
    return int(np.count_nonzero(np.abs(heard.astype(np.int32)) > 3000))


async def test_what_the_kiosk_plays_reaches_the_speaker_sink(pulse_server: PulseServer) -> None:
    """A tone fed to the agent input is heard on spk.monitor at its frequency."""
    engine = AudioEngine(audio=AudioConfig(output_volume=1.0, **PULSE))
    recording = AUDIO_DIR / "spk_monitor.raw"
    recording.unlink(missing_ok=True)
    recorder = pulse_server.record(recording)
    await engine.start()
    try:
        # The recorder writes as the monitor delivers: once bytes arrive it hears everything that follows.
        await until(lambda: recording.exists() and recording.stat().st_size > 0, 10, "the recorder to start")
        t = np.arange(48_000) / 48_000
        engine.mixer_input(AGENT).push((np.sin(2 * np.pi * 1000 * t) * 12_000).astype(np.int16))
        await until(lambda: not engine.mixer.inputs[AGENT].active, 10, "the agent's input to drain", step=0.005)
        # What left the mixer still passes through PulseAudio's buffers: wait until the monitor gave it all back.
        await until(lambda: _loud_samples(recording) > 20_000, 10, "the tone on spk.monitor", step=0.05)
    finally:
        await engine.close()
        recorder.terminate()
        recorder.wait(timeout=5)
    heard = np.fromfile(recording, dtype="<i2").astype(np.float64)
    assert _loud_samples(recording) > 20_000
    spectrum = np.abs(np.fft.rfft(heard))
    assert np.argmax(spectrum) * 48_000 / len(heard) == pytest.approx(1000, abs=5)


async def test_pulled_microphone_comes_back(pulse_server: PulseServer) -> None:
    """Unloading the mic sink is reported as an audio device failure; loading it again brings capture back.

    PulseAudio moves the capture stream to the speaker's monitor when its source goes: the daemon's deafness watch
    (on here as in ``kiosk run``) notices and the supervisor reopens the configured device once it is back.
    """
    config = AudioConfig(reopen_backoff_max_s=0.5, **PULSE)
    engine = AudioEngine(audio=config)
    watch = DeafnessWatch(
        engine=engine, probe=PulseProbe(server=pulse_server.env["PULSE_SERVER"]), digital_silence_s=0, interval_s=0.2
    )
    health: list[AudioHealthEvent] = []
    frames: list[MicFrame] = []
    engine.subscribe_health(health.append)
    engine.subscribe_frames(frames.append)
    await engine.start()
    watch.start(asyncio.get_running_loop())
    try:
        await until(
            lambda: len(frames) > 20 and watch.expected_source is not None,
            15,
            "frames and the expected source",
            step=0.005,
        )
        pulse_server.unload_sink("mic")
        try:
            await until(
                lambda: any(not e.ok and e.direction == "input" for e in health), 15, "the input to fail", step=0.005
            )
        finally:
            pulse_server.load_sink("mic")
        await until(
            lambda: any(e.ok and e.direction == "input" for e in health[-1:]), 15, "the input to recover", step=0.005
        )
        count = len(frames)
        await until(lambda: len(frames) > count + 20, 10, "20 more frames", step=0.005)
    finally:
        await watch.stop()
        await engine.close()
        pulse_server.restart()  # the mic sink vanished and the stream was moved: a fresh server for later tests
    failure = next(e for e in health if not e.ok)
    assert failure.reason == "audio_device"
    assert engine.health().input.reopens >= 1
