"""The audio engine against fake streams: pre-roll hand-over, wake gating, health and device recovery."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kiosk.audio import AGENT, AudioEngine, AudioHealthEvent, Chime, VadEvent, VadEventKind
from kiosk.audio.capture import IDLE_HAND_OFF_BLOCKS
from kiosk.audio.fake import FakeStreamFactory
from kiosk.audio.processing import Processor
from kiosk.audio.recovery import FIRST_BLOCK_GRACE_S, Direction
from kiosk.audio.streams import DeviceInfo
from kiosk.commands.devices import format_devices
from kiosk.commands.devices import main as devices_main
from kiosk.config import AudioConfig, TriggerConfig
from kiosk.errors import AudioDeviceError
from kiosk.reasons import FailureReason
from tests.fixtures.audio import SpeechClip
from tests.fixtures.engine import RAW, Clock, settle
from tests.fixtures.waiting import until

MONO48 = (DeviceInfo(0, "Mic 48k", "ALSA", 1, 0, 48_000.0), DeviceInfo(1, "Speaker", "ALSA", 0, 2, 48_000.0))


class ReverseRecorder(Processor):
    """A pass-through processor that records the reverse stream."""

    def __init__(self) -> None:
        super().__init__(AudioConfig(**RAW))
        self.reversed: list[np.ndarray] = []

    def reverse(self, pcm: np.ndarray) -> None:
        self.reversed.append(pcm.copy())


async def test_wrong_device_name_lists_the_devices() -> None:
    """A device name that matches nothing fails at start and names the devices that exist."""
    engine = AudioEngine(audio=AudioConfig(input_device="Nope"), stream_factory=FakeStreamFactory())
    with pytest.raises(AudioDeviceError, match="Fake USB Mic"):
        await engine.start()


async def test_missing_input_channel_fails_at_start() -> None:
    """Asking for channel 3 of a 2-channel microphone is refused at start."""
    engine = AudioEngine(audio=AudioConfig(input_channel=3), stream_factory=FakeStreamFactory())
    with pytest.raises(AudioDeviceError, match="input_channel"):
        await engine.start()


async def test_devices_by_index_and_substring_open_native_formats() -> None:
    """An index and a substring both resolve; streams open at the device's rate and channel count."""
    factory = FakeStreamFactory()
    engine = AudioEngine(audio=AudioConfig(input_device="usb", output_device=1), stream_factory=factory)
    await engine.start()
    await engine.close()
    mic, speaker = factory.latest("input"), factory.latest("output")
    assert (mic.device, mic.samplerate, mic.channels) == (0, 44_100, 2)
    assert (speaker.device, speaker.samplerate, speaker.channels) == (1, 48_000, 2)
    assert mic.closed and speaker.closed


async def test_press_capture_hands_over_without_gap_or_duplicate() -> None:
    """Audio from the press is held until taken, then every later frame streams live, in order."""
    clock = Clock()
    factory = FakeStreamFactory(devices=MONO48)
    engine = AudioEngine(audio=AudioConfig(pre_roll_ms=200, **RAW), stream_factory=factory, clock=clock)
    await engine.start()
    mic = factory.latest("input")

    def feed(first: int, count: int) -> None:
        for i in range(first, first + count):
            clock.now = 100.0 + i * 0.01
            mic.feed(np.full(480, i, dtype=np.int16))

    # Blocks come over in batches (nine while idle, three in a session): the counts keep to whole batches.
    feed(0, 27)
    await settle()
    feed(27, 27)  # (the loop's queue holds 50 blocks: let it take the first ones)
    await settle()
    capture = engine.start_capture(since=100.0 + 44.5 * 0.01)  # the press fell inside frame 45
    feed(54, 27)
    await settle()
    pre = capture.take_preconnect()
    feed(81, 18)
    await settle()
    held = np.frombuffer(pre.pcm, dtype=np.int16)[::480]
    assert list(held) == list(range(45, 81))
    assert pre.duration_s == pytest.approx(0.36)
    live: list[int] = []
    capture.close()
    async with asyncio.timeout(2):
        live.extend([int(frame.pcm[0]) async for frame in capture])
    assert live == list(range(81, 99))
    await engine.close()


async def test_wake_keeps_the_first_words(speech: SpeechClip) -> None:
    """Capturing from a wake event's speech start includes the speech from its first voiced frame."""
    clock = Clock()
    factory = FakeStreamFactory(devices=MONO48)
    engine = AudioEngine(
        audio=AudioConfig(pre_roll_ms=1500),
        trigger=TriggerConfig(voice_wake=True),
        stream_factory=factory,
        clock=clock,
    )
    events: list[VadEvent] = []
    engine.subscribe_vad(events.append)
    await engine.start()
    mic = factory.latest("input")
    voice = speech.pcm(48_000)
    signal = np.concatenate([np.zeros(48_000, np.int16), voice])
    capture = None
    for i in range(len(signal) // 480):
        clock.now = 100.0 + (i + 1) * 0.01
        mic.feed(signal[i * 480 : (i + 1) * 480])
        await settle()
        wake = next((e for e in events if e.kind == VadEventKind.WAKE), None)
        if wake is not None and capture is None:
            capture = engine.start_capture(since=wake.speech_start)
    assert capture is not None
    [woke] = [e for e in events if e.kind == VadEventKind.WAKE]
    assert woke.level_dbfs is not None and -50 < woke.level_dbfs < -5, "the wake's level is the speech's level"
    pre = capture.take_preconnect()
    await engine.close()
    first_voiced = 48_000 + int(np.flatnonzero(np.abs(voice) > 500)[0])
    started_at = len(signal) // 480 * 480 - len(pre.pcm) // 2
    assert started_at <= first_voiced + 480


async def test_chime_gates_wake_but_not_onsets(speech: SpeechClip) -> None:
    """Speech heard while a chime plays makes onsets but no wake."""
    clock = Clock()
    factory = FakeStreamFactory(devices=MONO48)
    engine = AudioEngine(
        audio=AudioConfig(**RAW), trigger=TriggerConfig(voice_wake=True), stream_factory=factory, clock=clock
    )
    events: list[VadEvent] = []
    engine.subscribe_vad(events.append)
    await engine.start()
    assert engine.play_chime(Chime.ENDED)
    engine.vad.gate_wake(clock.now + 100)  # hold the gate for the whole (compressed) test
    mic = factory.latest("input")
    mic.feed(speech.pcm(48_000))
    await settle()
    await engine.close()
    assert VadEventKind.ONSET in {e.kind for e in events}
    assert VadEventKind.WAKE not in {e.kind for e in events}


async def test_chimes_off_play_nothing() -> None:
    """With audio.chimes off, play_chime queues nothing."""
    engine = AudioEngine(audio=AudioConfig(chimes=False), stream_factory=FakeStreamFactory())
    await engine.start()
    assert not engine.play_chime(Chime.CONNECTED)
    assert engine.mixer.inputs["chimes"].queued_samples == 0
    await engine.close()


async def test_reverse_stream_is_what_was_played_and_starved_inputs_count() -> None:
    """In a session the echo canceller gets exactly the played blocks, silence included; running dry is counted."""
    factory = FakeStreamFactory(devices=MONO48)
    recorder = ReverseRecorder()
    engine = AudioEngine(audio=AudioConfig(output_volume=1.0, **RAW), stream_factory=factory, processor=recorder)
    await engine.start()
    engine.start_capture()
    speaker = factory.latest("output")
    tone = (np.sin(np.arange(4800) / 5) * 10_000).astype(np.int16)
    engine.mixer_input(AGENT).push(tone)
    played = []
    for _ in range(20):
        played.append(speaker.pull(1))
        await settle()
    await engine.close()
    assert np.array_equal(np.concatenate(recorder.reversed), np.concatenate(played)[: 480 * len(recorder.reversed)])
    assert np.array_equal(np.concatenate(played)[np.concatenate(played) != 0], tone[tone != 0])
    assert engine.health().mixer_starved[AGENT] == 1


async def test_device_error_is_reported_and_reopened() -> None:
    """A stream PortAudio stops is reported as audio_device, reopened after backoff, and reported back."""
    factory = FakeStreamFactory(devices=MONO48)
    config = AudioConfig(stall_timeout_s=5.0, reopen_backoff_max_s=0.2, **RAW)
    engine = AudioEngine(audio=config, stream_factory=factory, rng=lambda: 0.0)
    health: list[AudioHealthEvent] = []
    engine.subscribe_health(health.append)
    await engine.start()
    first = factory.latest("input")
    factory.refuse.add("input")
    first.fail()
    await until(lambda: len(health) >= 1, 5, "the input to fail", step=0.005)
    assert (health[0].direction, health[0].ok, health[0].reason) == ("input", False, FailureReason.AUDIO_DEVICE)
    assert first.closed and not engine.health().input.ok
    await until(lambda: "refused" in (engine.health().input.last_error or ""), 5, "a refused reopen", step=0.005)
    factory.refuse.clear()
    await until(lambda: len(health) >= 2, 5, "the input to recover", step=0.005)
    assert health[1].ok
    snapshot = engine.health()
    assert snapshot.input.ok and snapshot.input.failures == 1 and snapshot.input.reopens == 1
    assert factory.latest("input") is not first
    await engine.close()


async def test_stalled_input_is_reopened() -> None:
    """An input that delivers nothing for stall_timeout_s counts as failed and is reopened."""
    factory = FakeStreamFactory(devices=MONO48)
    config = AudioConfig(stall_timeout_s=0.2, reopen_backoff_max_s=0.1, **RAW)
    engine = AudioEngine(audio=config, stream_factory=factory)
    health: list[AudioHealthEvent] = []
    engine.subscribe_health(health.append)
    await engine.start()
    factory.latest("input").feed(np.zeros((4800, 1), dtype=np.int16))  # it ran, then went quiet
    await until(lambda: any(not e.ok and e.direction == "input" for e in health), 5, "the input to fail", step=0.005)
    await until(lambda: any(e.ok and e.direction == "input" for e in health), 10, "the input to recover", step=0.005)
    assert "no audio" in (engine.health().input.last_error or "")
    await engine.close()


def test_a_fresh_stream_gets_a_grace_for_its_first_block() -> None:
    """Before its first block a stream is judged by ``FIRST_BLOCK_GRACE_S``, after it by the stall timeout."""

    class Quiet:
        last_block_t: float | None = None

        def stop(self) -> None: ...

        def close(self) -> None: ...

    stream = Quiet()
    direction = Direction(name="input", stream=stream, opened_t=100.0)
    assert not direction.stalled(100.0 + FIRST_BLOCK_GRACE_S - 0.1, 0.2)
    assert direction.stalled(100.0 + FIRST_BLOCK_GRACE_S + 0.1, 0.2)
    stream.last_block_t = 101.0
    assert not direction.stalled(101.1, 0.2)
    assert direction.stalled(101.3, 0.2)


def test_devices_command_marks_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """``kiosk devices`` lists inputs and outputs with rate and channels and marks the defaults."""
    assert devices_main([], factory=FakeStreamFactory()) == 0
    out = capsys.readouterr().out
    assert "*[ 0] Fake USB Mic  (ALSA, 44100 Hz, 2 ch)" in out
    assert "*[ 1] Fake Speaker  (ALSA, 48000 Hz, 2 ch)" in out
    assert out.index("inputs:") < out.index("outputs:")
    assert "(none)" in format_devices([], (None, None))


class CountingProcessor(ReverseRecorder):
    """A pass-through processor that counts the mic frames it processes."""

    def __init__(self) -> None:
        super().__init__()
        self.processed = 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        self.processed += 1
        return pcm


async def test_idle_without_wake_rests_the_processing() -> None:
    """With idle processing off, no frame and no reverse block is processed until a session captures audio."""
    factory = FakeStreamFactory(devices=MONO48)
    processor = CountingProcessor()
    engine = AudioEngine(audio=AudioConfig(**RAW), stream_factory=factory, processor=processor)
    engine.idle_processing = False
    await engine.start()
    mic, speaker = factory.latest("input"), factory.latest("output")
    for _ in range(IDLE_HAND_OFF_BLOCKS):  # idle blocks come over in batches
        mic.feed(np.ones(480, dtype=np.int16))
        speaker.pull(1)
    await settle()
    assert processor.processed == 0 and processor.reversed == []
    capture = engine.start_capture()
    for _ in range(9):
        mic.feed(np.ones(480, dtype=np.int16))
        speaker.pull(1)
    await until(
        lambda: processor.processed == 9 and len(processor.reversed) == 9,
        2,
        "9 blocks processed and reversed",
        step=0.005,
    )
    capture.close()
    await engine.close()
