"""The audio engine through PortAudio on ALSA file devices: exact, faster than real time."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest

from kiosk.audio import AGENT, AudioEngine, Chime, MicFrame, VadEvent, VadEventKind
from kiosk.audio.chimes import render
from kiosk.audio.streams import SoundDeviceFactory
from kiosk.config import AudioConfig, TriggerConfig
from tests.fixtures.audio import AlsaFiles, SpeechClip, to_raw
from tests.fixtures.waiting import until

RAW = {"echo_cancellation": False, "noise_suppression": False, "high_pass_filter": False, "auto_gain": False}


def peak_hz(pcm: np.ndarray, rate: int = 48_000) -> float:
    """The strongest frequency in ``pcm``."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(pcm))


class Recorder:
    """Collects processed frames and VAD events with the frame index each event came at."""

    def __init__(self, engine: AudioEngine) -> None:
        self.frames: list[MicFrame] = []
        self.events: list[tuple[int, VadEvent]] = []
        engine.subscribe_frames(self.frames.append)
        engine.subscribe_vad(lambda event: self.events.append((len(self.frames), event)))

    def kinds(self, kind: VadEventKind) -> list[int]:
        """Frame indices of the events of ``kind``."""
        return [index for index, event in self.events if event.kind == kind]

    def pcm(self) -> np.ndarray:
        """All frames joined."""
        return np.concatenate([f.pcm for f in self.frames])


class NativeRatesOnly(SoundDeviceFactory):
    """PortAudio, but every device is taken to accept only its default rate (a fixed-rate USB microphone)."""

    def supports(self, *, kind: str, device: int, samplerate: int, channels: int) -> bool:
        """Only the device's default rate."""
        return bool(int(self._sd.query_devices(device)["default_samplerate"]) == samplerate)


def test_portaudio_answers_whether_a_device_takes_the_pipeline_rate(alsa_files: AlsaFiles) -> None:
    """The real factory asks PortAudio: an ALSA plug device takes 48 kHz, an absurd rate is refused."""
    factory = SoundDeviceFactory()
    index = next(d.index for d in factory.devices() if d.name == alsa_files.mic48)
    assert factory.supports(kind="input", device=index, samplerate=48_000, channels=1)
    assert not factory.supports(kind="input", device=index, samplerate=1, channels=1)


A52_PLUGIN = Path("/usr/lib") / sysconfig.get_config_var("MULTIARCH") / "alsa-lib/libasound_module_pcm_a52.so"


@pytest.mark.skipif(not A52_PLUGIN.exists(), reason="libasound2-plugins' a52 plugin is not installed")
def test_the_device_scan_leaves_no_unused_alsa_plugin_loaded(alsa_files: AlsaFiles) -> None:
    """PortAudio's scan opens every PCM the ALSA configuration names (a52 loads libavcodec); the factory unloads the
    modules no PCM uses, and devices still open after it (ALSA reads its configuration again)."""
    factory = SoundDeviceFactory()
    factory.rescan()
    assert A52_PLUGIN.name not in Path("/proc/self/maps").read_text()
    index = next(d.index for d in factory.devices() if d.name == alsa_files.mic48)
    assert factory.supports(kind="input", device=index, samplerate=48_000, channels=1)


async def test_capture_picks_the_channel_and_resamples_to_48k(alsa_files: AlsaFiles) -> None:
    """A 2-channel 44.1 kHz mic that takes only 44.1 kHz gives 48 kHz mono frames of the chosen channel, with the
    right duration (the ALSA file device behind a plug cannot convert rates itself faster than real time)."""
    t = np.arange(44_100) / 44_100
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 1000 * t)], axis=1) * 8000
    to_raw(stereo.astype(np.int16), alsa_files.mic_in, rate=44_100)
    config = AudioConfig(input_device="mic_file", output_device=alsa_files.spk, input_channel=1, **RAW)
    engine = AudioEngine(audio=config, max_pending_s=30, stream_factory=NativeRatesOnly())
    rec = Recorder(engine)
    await engine.start()
    try:
        await until(lambda: len(rec.frames) >= 150, 10, "150 recorded frames", step=0.005)
    finally:
        await engine.close()
    pcm = rec.pcm()[: 150 * 480]
    assert all(len(f.pcm) == 480 for f in rec.frames)
    loud = np.flatnonzero(np.abs(pcm) > 2000)
    assert abs((loud[-1] - loud[0]) - 48_000) < 200
    assert peak_hz(pcm[loud[0] : loud[-1]]) == pytest.approx(1000, abs=2)
    health = engine.health()
    assert (health.input.samplerate, health.input.channels) == (44_100, 2)


async def test_playback_writes_exactly_the_mix(alsa_files: AlsaFiles) -> None:
    """What an input is fed reaches the speaker sample for sample, in order, at volume 1."""
    rng = np.random.default_rng(5)
    signal = (rng.integers(1000, 20000, 48_000) * rng.choice([-1, 1], 48_000)).astype(np.int16)
    config = AudioConfig(input_device=alsa_files.mic48, output_device=alsa_files.spk, output_volume=1.0, **RAW)
    engine = AudioEngine(audio=config, max_pending_s=30)
    await engine.start()
    try:
        engine.mixer_input(AGENT).push(signal)
        await until(
            lambda: np.count_nonzero(alsa_files.speaker()) >= len(signal), 10, "the signal on the speaker", step=0.005
        )
    finally:
        await engine.close()
    played = alsa_files.speaker()
    assert np.array_equal(played[played != 0], signal)
    assert engine.health().output_starved_blocks > 0  # the file device outruns the loop, which fills silence


async def test_chime_plays_at_its_volume(alsa_files: AlsaFiles) -> None:
    """The connected chime reaches the speaker scaled by chime_volume and output_volume."""
    config = AudioConfig(
        input_device=alsa_files.mic48, output_device=alsa_files.spk, output_volume=1.0, chime_volume=0.5, **RAW
    )
    engine = AudioEngine(audio=config, max_pending_s=30)
    expected = np.round(render(Chime.CONNECTED, level=0.9).astype(np.float32) * 0.5).astype(np.int16)
    await engine.start()
    try:
        assert engine.play_chime(Chime.CONNECTED)
        await until(
            lambda: np.count_nonzero(alsa_files.speaker()) >= np.count_nonzero(expected),
            10,
            "the expected samples on the speaker",
            step=0.005,
        )
    finally:
        await engine.close()
    played = alsa_files.speaker()
    assert np.array_equal(played[played != 0], expected[expected != 0])


async def test_vad_segments_espeak_speech(alsa_files: AlsaFiles, speech: SpeechClip) -> None:
    """Speech after a second of silence gives an onset near its start, a wake, and an offset after its end."""
    voice = speech.pcm(48_000)
    lead = 48_000
    to_raw(np.concatenate([np.zeros(lead, np.int16), voice]), alsa_files.mic48_in, pad_s=2.0)
    config = AudioConfig(input_device=alsa_files.mic48, output_device=alsa_files.spk)
    engine = AudioEngine(audio=config, trigger=TriggerConfig(voice_wake=True), max_pending_s=30)
    rec = Recorder(engine)
    total = (lead + len(voice)) // 480 + 150
    await engine.start()
    try:
        await until(lambda: len(rec.frames) >= total, 10, "every frame recorded", step=0.005)
    finally:
        await engine.close()
    onsets, offsets, wakes = (rec.kinds(k) for k in (VadEventKind.ONSET, VadEventKind.OFFSET, VadEventKind.WAKE))
    voiced = np.flatnonzero(np.abs(voice) > 500)
    start, end = (lead + voiced[0]) // 480, (lead + voiced[-1]) // 480
    assert start <= onsets[0] <= start + 40
    assert len(wakes) >= 1 and onsets[0] < wakes[0] < onsets[0] + 100
    assert end <= offsets[-1] <= end + 60 + 30
    assert len(offsets) == len(onsets)
    assert len(onsets) <= 4


@pytest.mark.parametrize("kind", ["white noise", "hum", "low music"])
async def test_vad_does_not_wake_on_noise_or_music(alsa_files: AlsaFiles, kind: str) -> None:
    """Steady noise, mains hum and quiet music never wake the kiosk."""
    rng = np.random.default_rng(7)
    seconds = 5
    t = np.arange(48_000 * seconds) / 48_000
    if kind == "white noise":
        wave = rng.normal(0, 0.05, len(t))
    elif kind == "hum":
        wave = 0.1 * np.sin(2 * np.pi * 100 * t) + 0.05 * np.sin(2 * np.pi * 150 * t)
    else:
        notes = 220 * 2 ** (rng.integers(0, 12, seconds * 4) / 12)
        freq = np.repeat(notes, 12_000)
        phase = 2 * np.pi * np.cumsum(freq) / 48_000
        wave = 0.02 * (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.3 * np.sin(1.5 * phase))
    to_raw((wave * 32767).astype(np.int16), alsa_files.mic48_in, pad_s=0.5)
    config = AudioConfig(input_device=alsa_files.mic48, output_device=alsa_files.spk)
    engine = AudioEngine(audio=config, trigger=TriggerConfig(voice_wake=True), max_pending_s=30)
    rec = Recorder(engine)
    await engine.start()
    try:
        await until(lambda: len(rec.frames) >= seconds * 100, 10, "the whole recording", step=0.005)
    finally:
        await engine.close()
    assert rec.kinds(VadEventKind.WAKE) == []
