"""``kiosk test speaker``: a tone, the chimes and a spoken sentence through the daemon's mixer and output path.

Everything plays at the configured ``audio.output_volume`` (the chimes at ``audio.chime_volume`` on top of it), so
what the installer hears is how loud the agent and the chimes will be.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kiosk.audio.chimes import Chime
from kiosk.audio.engine import AGENT, AudioEngine
from kiosk.audio.frames import SAMPLE_RATE, Pcm, Resampler
from kiosk.audio.streams import StreamFactory
from kiosk.config import AudioConfig
from kiosk.errors import AudioDeviceError

SENTENCE = "This is the kiosk speaker test. If you can hear this sentence clearly, the speaker works."
TONE_LEVEL = 0.5
#: The output is given up on when it plays nothing for this long.
STALL_S = 5.0


@dataclasses.dataclass(frozen=True)
class SpeakerReport:
    """What was played where: the device, the volume, and each step with its length in seconds (or why not)."""

    device: str
    volume: float
    steps: list[dict[str, object]]


def tone(freq_hz: float, seconds: float) -> Pcm:
    """A sine tone as 48 kHz int16 at half of full scale, faded in and out over 10 ms (no clicks)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)
    return np.round(np.sin(2 * np.pi * freq_hz * t) * fade * TONE_LEVEL * 32767).astype(np.int16)


async def speech(sentence: str) -> Pcm | None:
    """``sentence`` spoken by espeak-ng as 48 kHz int16, or None when espeak-ng is not installed."""
    from kiosk.demo.wavio import read_wav

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    with tempfile.TemporaryDirectory(prefix="kiosk-speaker-") as tmp:
        wav = Path(tmp) / "sentence.wav"
        process = await asyncio.create_subprocess_exec(espeak, "-s", "150", "-w", str(wav), sentence)
        if await asyncio.wait_for(process.wait(), 30) != 0:
            return None
        samples, rate = await asyncio.to_thread(read_wav, wav)
    resampler = Resampler(rate, SAMPLE_RATE)
    return np.concatenate([resampler.push(samples), resampler.push(np.zeros(rate // 10, dtype=np.int16))])


async def play(
    *,
    audio: AudioConfig,
    factory: StreamFactory,
    tone_hz: float,
    tone_s: float,
    sentence: str,
    on_step: Callable[[str], None],
) -> SpeakerReport:
    """Open ``audio.output_device``, play the tone, the chimes and the sentence (``AudioDeviceError`` if it cannot open)."""
    engine = AudioEngine(audio=audio, stream_factory=factory)
    await engine.open_direction(engine.output)
    device = engine.output.device or "?"
    steps: list[dict[str, object]] = []
    try:
        on_step(f"tone: {tone_hz:.0f} Hz for {tone_s:.1f} s")
        await _drain(engine, AGENT, tone(tone_hz, tone_s))
        steps.append({"step": "tone", "hz": tone_hz, "seconds": tone_s})
        if audio.chimes:
            for chime in Chime:
                on_step(f"chime: {chime} (audio.chime_volume = {audio.chime_volume})")
                engine.play_chime(chime)
                await _wait_quiet(engine, "chimes")
                steps.append({"step": f"chime {chime}"})
        else:
            on_step("chimes: off (audio.chimes = false)")
        on_step(f"speech: {sentence!r}")
        spoken = await speech(sentence)
        if spoken is None:
            on_step("speech: skipped, espeak-ng is not installed (sudo apt-get install espeak-ng)")
            steps.append({"step": "speech", "skipped": "espeak-ng is not installed"})
        else:
            await _drain(engine, AGENT, spoken)
            steps.append({"step": "speech", "seconds": round(len(spoken) / SAMPLE_RATE, 2)})
    finally:
        await engine.close_direction(engine.output, None)
    return SpeakerReport(device=device, volume=audio.output_volume, steps=steps)


async def _drain(engine: AudioEngine, name: str, pcm: Pcm) -> None:
    engine.mixer_input(name).push(pcm)
    await _wait_quiet(engine, name)


async def _wait_quiet(engine: AudioEngine, name: str) -> None:
    """Wait until the mixer input ``name`` has played everything, then a little for the device's own buffer.

    Raises ``AudioDeviceError`` when the device plays nothing for ``STALL_S`` (a pulse stream can take a second or
    two to start on a busy machine, so progress is watched rather than the total time).
    """
    source = engine.mixer.inputs[name]
    loop = asyncio.get_running_loop()
    last = (source.queued_samples, loop.time())
    # The mixer is drained at the output callback's pace; there is no event for "input empty".
    while source.active:
        await asyncio.sleep(0.02)
        if source.queued_samples != last[0]:
            last = (source.queued_samples, loop.time())
        elif loop.time() - last[1] > STALL_S:
            raise AudioDeviceError(f"the output device {engine.output.device!r} stopped playing for {STALL_S:g} s")
    await asyncio.sleep(max(0.1, engine.output.latency_s or 0.0))
