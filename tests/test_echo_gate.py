"""The echo gate after LiveKit's real APM (:mod:`kiosk.audio.processing`): residue under ``audio.echo_gate_dbfs``
is taken down while the speaker plays and for the echo tail after it; the visitor's speech and anything heard while
the speaker is silent pass."""

from __future__ import annotations

import numpy as np

from kiosk.audio import AGENT, AudioEngine
from kiosk.audio.fake import FakeStreamFactory
from kiosk.audio.frames import FRAME_SAMPLES, dbfs
from kiosk.audio.processing import ECHO_TAIL_MS, GATE_OFF_DBFS, Processor
from kiosk.config import AudioConfig
from tests.fixtures.audio import SpeechClip
from tests.fixtures.engine import Clock, settle

RNG = np.random.default_rng(7)


def _tone(level_dbfs: float, frames: int, hz: float = 440.0) -> np.ndarray:
    """A sine at ``level_dbfs`` RMS (int16, 48 kHz), ``frames`` 10 ms frames long."""
    t = np.arange(frames * FRAME_SAMPLES) / 48_000
    amplitude = 32768 * 10 ** (level_dbfs / 20) * np.sqrt(2)
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _noise(level_dbfs: float, frames: int) -> np.ndarray:
    return (RNG.normal(0, 32768 * 10 ** (level_dbfs / 20), frames * FRAME_SAMPLES)).astype(np.int16)


def _frames(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm), FRAME_SAMPLES)]


def _plain() -> AudioConfig:
    """Only the canceller: noise suppression and AGC would change the levels this test compares."""
    return AudioConfig(echo_cancellation=True, noise_suppression=False, high_pass_filter=False, auto_gain=False)


def _run(processor: Processor, speaker: np.ndarray, mic: np.ndarray) -> list[np.ndarray]:
    out = []
    for far, near in zip(_frames(speaker), _frames(mic), strict=True):
        processor.reverse(far)
        out.append(processor.process(near))
    return out


def _energy_db(frames: list[np.ndarray]) -> float:
    pcm = np.concatenate(frames).astype(np.float64)
    return float(10 * np.log10(np.mean(pcm**2) + 1e-9))


def test_quiet_residue_is_gated_while_the_speaker_plays_and_the_visitor_passes(speech: SpeechClip) -> None:
    """The agent speaks throughout; the microphone has a residue under the gate, then the visitor talks over the
    agent. Compared with the same run without the gate: the residue is 30 dB lower or more, the visitor within 1 dB."""
    voice = speech.pcm(48_000)
    far = np.tile(voice, 4)[: 300 * FRAME_SAMPLES]
    far = (far.astype(np.float64) * 0.3).astype(np.int16)
    visitor = np.tile(voice[::-1], 4)[: 150 * FRAME_SAMPLES]
    mic = np.concatenate([_noise(-70.0, 150), visitor])
    gated = _run(Processor(_plain()), far, mic)
    open_ = _run(Processor(_plain().model_copy(update={"echo_gate_dbfs": GATE_OFF_DBFS})), far, mic)
    assert _energy_db(gated[50:150]) < _energy_db(open_[50:150]) - 30
    assert _energy_db(gated[170:300]) > _energy_db(open_[170:300]) - 1.0, "the visitor talking over the agent was cut"


def test_the_gate_opens_after_the_echo_tail() -> None:
    processor = Processor(_plain())
    tail = ECHO_TAIL_MS // 10
    speaker = np.concatenate([_tone(-20.0, 50), np.zeros((tail + 100) * FRAME_SAMPLES, np.int16)])
    quiet_speech = _noise(-60.0, 50 + tail + 100)
    out = _run(processor, speaker, quiet_speech)
    # within the tail the residue-level sound is still taken down; after it, it reaches the agent
    assert dbfs(out[50 + tail - 10]) < -90.0
    after = out[50 + tail + 20 :]
    assert min(dbfs(f) for f in after) > -66.0, "quiet sound with the speaker silent was gated"


def test_the_gate_can_be_turned_off() -> None:
    processor = Processor(_plain().model_copy(update={"echo_gate_dbfs": GATE_OFF_DBFS}))
    out = _run(processor, _tone(-20.0, 100, hz=300.0), _noise(-70.0, 100))
    assert processor.gated == 0
    assert min(dbfs(f) for f in out[50:]) > -80.0


def test_without_echo_cancellation_nothing_is_gated() -> None:
    config = AudioConfig(echo_cancellation=False, noise_suppression=False, high_pass_filter=False, auto_gain=True)
    processor = Processor(config)
    out = _run(processor, _tone(-20.0, 100, hz=300.0), _noise(-70.0, 100))
    assert processor.gated == 0
    assert len(out) == 100


async def test_a_new_session_starts_with_the_gate_open_after_the_agent_spoke_to_the_end_of_the_last() -> None:
    """The last session ends while the speaker still plays; the next one, with the speaker silent, gets its quiet
    sound whole: the gate's count ran down only on processed frames, so it must not carry over the idle pause."""
    clock = Clock()
    factory = FakeStreamFactory()
    factory.rates.add(48_000)
    config = _plain().model_copy(update={"output_volume": 1.0, "chimes": False})
    engine = AudioEngine(audio=config, stream_factory=factory, clock=clock)
    await engine.start()
    mic, speaker = factory.latest("input"), factory.latest("output")
    step = 0

    async def run(frames: int, quiet_mic: bool) -> None:
        nonlocal step
        for _ in range(frames):
            step += 1
            clock.now = 100.0 + step * 0.01
            speaker.pull(1)
            mic.feed(_noise(-50.0, 1) if quiet_mic else np.zeros(FRAME_SAMPLES, np.int16))
            await settle()

    first = engine.start_capture()
    first.take_preconnect()
    engine.mixer_input(AGENT).push(_noise(-20.0, 300))
    await run(100, quiet_mic=False)
    first.close()  # the session ends while the agent's audio still plays
    await run(300, quiet_mic=False)  # idle long after; the agent's audio ran out
    gated_before = engine.processor.gated
    second = engine.start_capture()
    second.take_preconnect()
    await run(60, quiet_mic=True)
    assert engine.processor.gated == gated_before, "the new session's quiet sound was gated by the last session's echo"
    second.close()
    await engine.close()
