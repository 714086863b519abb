"""The idle path and the switch into a call, counted through the engine with fake streams (counts, never times)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from livekit import rtc

from kiosk.audio import AGENT, AudioEngine, VadEvent, VadEventKind
from kiosk.audio.capture import IDLE_HAND_OFF_BLOCKS
from kiosk.audio.fake import DEFAULT_DEVICES, FakeStreamFactory
from kiosk.audio.playback import Playback
from kiosk.audio.preroll import SessionCapture
from kiosk.audio.processing import MAX_STREAM_DELAY_MS, Processor
from kiosk.config import AudioConfig, TriggerConfig
from tests.fixtures.audio import SpeechClip
from tests.fixtures.engine import RAW, Clock, settle
from tests.fixtures.waiting import until


class CountingProcessor(Processor):
    """The real processor (APM on) that counts its capture and reverse calls."""

    def __init__(self, config: AudioConfig) -> None:
        super().__init__(config)
        self.processed = 0
        self.reversed = 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        self.processed += 1
        return super().process(pcm)

    def reverse(self, pcm: np.ndarray) -> None:
        self.reversed += 1
        super().reverse(pcm)


class PassThrough(Processor):
    """A processor that returns each frame as it came and counts the calls."""

    def __init__(self) -> None:
        super().__init__(AudioConfig(**RAW))
        self.processed = 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        self.processed += 1
        return pcm


@pytest.fixture
def resampler_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every push into any ``rtc.AudioResampler`` (the real one still runs)."""
    calls: list[int] = []
    push = rtc.AudioResampler.push

    def counting(self: rtc.AudioResampler, data: bytearray | rtc.AudioFrame) -> list[rtc.AudioFrame]:
        calls.append(1)
        return push(self, data)

    monkeypatch.setattr(rtc.AudioResampler, "push", counting)
    return calls


def playback(engine: AudioEngine) -> Playback:
    """The engine's open output stream."""
    assert isinstance(engine.output.stream, Playback)
    return engine.output.stream


async def test_devices_open_at_the_pipeline_rate_when_they_accept_it(resampler_calls: list[int]) -> None:
    """A 44.1 kHz microphone that also takes 48 kHz is opened at 48 kHz: nothing is resampled."""
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    engine = AudioEngine(audio=AudioConfig(**RAW), stream_factory=factory)
    await engine.start()
    mic = factory.latest("input")
    for _ in range(10):
        mic.feed(np.ones(480, dtype=np.int16))
    await settle()
    await engine.close()
    assert (mic.samplerate, factory.latest("output").samplerate) == (48_000, 48_000)
    assert engine.health().input.samplerate == 48_000 and resampler_calls == []


async def test_a_device_that_refuses_the_pipeline_rate_is_resampled(resampler_calls: list[int]) -> None:
    """A microphone that only takes 44.1 kHz opens at 44.1 kHz and is resampled to 48 kHz."""
    factory = FakeStreamFactory(devices=DEFAULT_DEVICES)
    engine = AudioEngine(audio=AudioConfig(**RAW), stream_factory=factory)
    await engine.start()
    mic = factory.latest("input")
    for _ in range(2 * IDLE_HAND_OFF_BLOCKS):
        mic.feed(np.ones(441, dtype=np.int16))
    await settle()
    await engine.close()
    assert mic.samplerate == 44_100 and len(resampler_calls) == 2 * IDLE_HAND_OFF_BLOCKS


async def test_idle_with_wake_runs_no_processing_no_resampling_and_a_quiet_speaker(
    resampler_calls: list[int],
) -> None:
    """Idle with voice wake on: no APM call, no reverse stream, no resampler, no speaker block handed to the loop;
    the VAD judges at most one 30 ms frame per three 10 ms blocks."""
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    config = AudioConfig()
    processor = CountingProcessor(config)
    engine = AudioEngine(
        audio=config, trigger=TriggerConfig(voice_wake=True), stream_factory=factory, processor=processor
    )
    engine.idle_processing = True
    await engine.start()
    mic, speaker = factory.latest("input"), factory.latest("output")
    noise = np.random.default_rng(1).normal(0, 3000, 480 * 36).astype(np.int16)
    for i in range(36):
        mic.feed(noise[i * 480 : (i + 1) * 480])
        assert not speaker.pull(1).any()
    await settle()
    assert (processor.processed, processor.reversed, resampler_calls) == (0, 0, [])
    out = playback(engine)
    assert out.quiet and out.posted == 0 and engine.health().output.blocks == 36
    assert engine.vad.judged <= 12
    await engine.close()


async def test_a_chime_wakes_the_quiet_speaker_and_it_rests_again() -> None:
    """Audio pushed to the mixer ends the quiet; once it has played, the speaker is quiet again."""
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    engine = AudioEngine(audio=AudioConfig(output_volume=1.0, **RAW), stream_factory=factory)
    await engine.start()
    speaker = factory.latest("output")
    speaker.pull(2)
    await settle()
    assert playback(engine).quiet
    engine.mixer_input(AGENT).push(np.full(4800, 1000, dtype=np.int16))
    assert not playback(engine).quiet
    played = []
    for _ in range(20):
        played.append(speaker.pull(1))
        await settle()
    assert int((np.concatenate(played) == 1000).sum()) == 4800
    assert playback(engine).quiet
    await engine.close()


async def test_first_words_intact_across_the_idle_to_call_switch() -> None:
    """Raw idle frames before the press and processed frames after it join without a gap or a duplicate."""
    clock = Clock()
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    processor = PassThrough()
    engine = AudioEngine(
        audio=AudioConfig(pre_roll_ms=300, **RAW),
        trigger=TriggerConfig(voice_wake=True),
        stream_factory=factory,
        clock=clock,
        processor=processor,
    )
    await engine.start()
    mic = factory.latest("input")
    signal = (np.arange(480 * 100) % 30_000).astype(np.int16)

    def feed(first: int, count: int) -> None:
        for i in range(first, first + count):
            clock.now = 100.0 + (i + 1) * 0.01
            mic.feed(signal[i * 480 : (i + 1) * 480])

    feed(0, 50)
    await settle()
    assert processor.processed == 0
    capture = engine.start_capture(since=100.0 + 30.5 * 0.01)  # the press fell inside frame 30
    feed(50, 40)
    await settle()
    # Idle blocks come over in batches: those the callback still held at the press reach the session raw (they were
    # captured before the echo canceller's span began); the 40 after it are processed.
    assert processor.processed == 40
    pre = np.frombuffer(capture.take_preconnect().pcm, dtype=np.int16)
    assert np.array_equal(pre, signal[30 * 480 : 90 * 480])
    capture.close()
    await engine.close()


@pytest.mark.parametrize("mic_phase_ms", [0, 3, 8])
async def test_the_canceller_gets_the_same_span_of_both_streams_across_idle_pauses(mic_phase_ms: int) -> None:
    """Through idle pauses of uneven lengths, with the press and the end falling anywhere in the devices' hand-off
    batches and the microphone's callbacks out of phase with the speaker's, the APM has had exactly as many speaker
    frames as microphone frames whenever a session starts.

    WebRTC's AEC3 pairs the two streams by counting frames; an unequal count is a new echo path delay to it, on which
    it resets and, for seconds of the agent's voice, suppresses the visitor's words (``python -m bench --only press``:
    first words kept 84 % -> 95-98 % on average).
    """
    clock = Clock()
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    processor = CountingProcessor(AudioConfig())
    engine = AudioEngine(
        audio=AudioConfig(),
        trigger=TriggerConfig(voice_wake=True),
        stream_factory=factory,
        clock=clock,
        processor=processor,
    )
    await engine.start()
    mic, speaker = factory.latest("input"), factory.latest("output")
    noise = np.random.default_rng(2).normal(0, 1000, 480).astype(np.int16)
    step = 0

    async def run(blocks: int, between: Callable[[], object] = lambda: None) -> None:
        """``blocks`` steps of 10 ms; ``between`` runs in the first one, after the speaker's callback and before the
        microphone's (a press or an end falls between the two devices' callbacks)."""
        nonlocal step
        for i in range(blocks):
            step += 1
            clock.now = 100.0 + step * 0.01
            speaker.pull(1)
            if i == 0:
                clock.now += mic_phase_ms / 2000
                between()
            clock.now = 100.0 + step * 0.01 + mic_phase_ms / 1000
            mic.feed(noise)
            await settle()

    captures: list[SessionCapture] = []
    presses = 0

    def press() -> None:
        nonlocal presses
        captures.append(engine.start_capture())
        presses += 1
        assert processor.processed == processor.reversed, f"at press {presses}"

    await run(20)
    for call, idle in ((50, 37), (31, 15), (64, 101), (7, 13), (45, 20), (3, 12)):
        before = processor.processed
        await run(call, press)
        engine.mixer_input(AGENT).push(np.full(480 * call // 2, 500, dtype=np.int16))  # the agent talks for a while
        captures[-1].close()  # after both devices' callbacks of a step: the press fell between them
        await run(idle)
        assert call - 4 <= processor.processed - before <= call + 4
    await run(1, press)
    assert presses == 7
    await engine.close()


async def test_a_muted_microphone_sends_zeros_even_when_the_canceller_has_learnt_an_echo() -> None:
    """The speaker's audio comes back into the microphone until the canceller has learnt it; once muted, every frame
    the session gets is zeros (the canceller, fed zeros, would put out its estimate of the echo)."""
    clock = Clock()
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    engine = AudioEngine(audio=AudioConfig(output_volume=1.0), stream_factory=factory, clock=clock)
    await engine.start()
    mic, speaker = factory.latest("input"), factory.latest("output")
    capture = engine.start_capture()
    capture.take_preconnect()
    far = np.random.default_rng(3).normal(0, 4000, 48_000 * 6).astype(np.int16)
    engine.mixer_input(AGENT).push(far)
    received: list[np.ndarray] = []

    async def drain() -> None:
        while True:
            frame = await anext(aiter(capture))
            received.append(frame.pcm)

    reader = asyncio.get_running_loop().create_task(drain())
    for step in range(500):
        if step == 400:
            engine.muted = True
            received.clear()
        clock.now = 100.0 + step * 0.01
        played = speaker.pull(1)
        mic.feed((played // 2).astype(np.int16))  # the echo: half the speaker's level, no delay
        await settle()
    reader.cancel()
    assert len(received) >= 90
    assert not np.concatenate(received).any(), "a muted microphone sent sound"
    capture.close()
    await engine.close()


async def test_first_words_keep_their_length_through_the_real_canceller(speech: SpeechClip) -> None:
    """With the real APM starting at the press, every 10 ms of the first words is still there."""
    clock = Clock()
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    engine = AudioEngine(
        audio=AudioConfig(pre_roll_ms=1500), trigger=TriggerConfig(voice_wake=True), stream_factory=factory, clock=clock
    )
    events: list[VadEvent] = []
    engine.subscribe_vad(events.append)
    await engine.start()
    mic = factory.latest("input")
    voice = speech.pcm(48_000)
    blocks = len(voice) // 480
    capture = None
    pressed_block = 0
    for i in range(blocks):
        clock.now = 100.0 + (i + 1) * 0.01
        mic.feed(voice[i * 480 : (i + 1) * 480])
        await settle()
        wake = next((e for e in events if e.kind == VadEventKind.WAKE), None)
        if wake is not None and capture is None:
            capture = engine.start_capture(since=wake.speech_start)
            pressed_block = i
    assert capture is not None, "the speech woke the kiosk"
    pre = capture.take_preconnect()
    # The blocks the callback still holds (less than one hand-off) are not delivered yet.
    delivered = engine.health().input.blocks
    assert blocks - delivered < 3
    since_start = sum(1 for i in range(delivered) if 100.0 + (i + 1) * 0.01 > capture.start)
    assert len(pre.pcm) // 2 == since_start * 480
    assert since_start > delivered - pressed_block, "the capture reaches back before the wake"
    capture.close()
    await engine.close()


async def test_output_block_counter_keeps_pace_in_a_call() -> None:
    """In a call every block the speaker played is counted, handed to the loop three at a time and fed to the
    canceller exactly once."""
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    config = AudioConfig(output_volume=1.0)
    processor = CountingProcessor(config)
    engine = AudioEngine(audio=config, stream_factory=factory, processor=processor)
    await engine.start()
    capture = engine.start_capture()
    speaker = factory.latest("output")
    engine.mixer_input(AGENT).push((np.sin(np.arange(48_000) / 7) * 8000).astype(np.int16))
    for _ in range(150):
        speaker.pull(1)
        await settle()
    await until(lambda: processor.reversed == 150, 5, "150 reverse blocks", step=0.005)
    out = playback(engine)
    assert (out.blocks, out.posted, engine.health().output.blocks) == (150, 50, 150)
    assert engine.health().output_underruns == 0
    capture.close()
    await engine.close()


async def test_stream_delay_follows_the_callback_timing_and_is_set_only_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The APM is told the echo path delay once, from the measured latencies, and again only when they move."""
    delays: list[int] = []
    set_delay = rtc.AudioProcessingModule.set_stream_delay_ms

    def counting(self: rtc.AudioProcessingModule, delay_ms: int) -> None:
        delays.append(delay_ms)
        set_delay(self, delay_ms)

    monkeypatch.setattr(rtc.AudioProcessingModule, "set_stream_delay_ms", counting)
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    engine = AudioEngine(audio=AudioConfig(), stream_factory=factory)
    await engine.start()
    mic, speaker = factory.latest("input"), factory.latest("output")
    mic.measured_latency, speaker.measured_latency = 0.012, 0.030
    capture = engine.start_capture()
    noise = np.random.default_rng(2).normal(0, 1000, 480 * 200).astype(np.int16)
    for i in range(100):
        mic.feed(noise[i * 480 : (i + 1) * 480])
    await settle()
    assert delays == [42]
    speaker.measured_latency = 0.032  # jitter below the step: kept
    for i in range(100, 150):
        mic.feed(noise[i * 480 : (i + 1) * 480])
    await settle()
    speaker.measured_latency = 0.060
    for i in range(150, 200):
        mic.feed(noise[i * 480 : (i + 1) * 480])
    await settle()
    assert delays == [42, 72] and engine.health().stream_delay_ms == 72
    capture.close()
    await engine.close()


def test_vad_judges_at_16k_and_refuses_sizes_webrtcvad_does_not_take() -> None:
    """Decimation averages each 3 samples; the floor is numpy's 10th percentile; a 25 ms frame is refused."""
    from kiosk.audio.vad import VoiceActivity, _tenth_percentile, decimate

    ramp = np.arange(-30_000, 30_000, 100, dtype=np.int16)
    assert np.array_equal(decimate(ramp), ((ramp[0::3].astype(np.int32) + ramp[1::3] + ramp[2::3]) // 3))
    levels = np.random.default_rng(3).normal(-50, 6, 67).astype(np.float32)
    for n in (1, 2, 10, 67):
        assert _tenth_percentile(levels[:n]) == pytest.approx(float(np.percentile(levels[:n], 10)), abs=1e-4)
    with pytest.raises(ValueError, match="10, 20 or 30 ms"):
        VoiceActivity(aggressiveness=2, onset_ms=120, offset_ms=600, wake_ms=400, frame_ms=25)


def test_a_measured_delay_beyond_webrtcs_range_is_clamped_not_refused() -> None:
    """Callback latencies adding up past 500 ms (a sound server filling its buffer) are applied as 500 ms: WebRTC
    refuses more, and the canceller would otherwise fail every frame until the latencies settle."""
    processor = Processor(AudioConfig(echo_cancellation=True))
    assert processor.follow_latencies(0.4, 0.4)
    assert processor.delay_ms == MAX_STREAM_DELAY_MS
    processor.process(np.zeros(480, dtype=np.int16))
    assert processor.errors == 0
