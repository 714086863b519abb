"""``kiosk test mic``'s listening: the daemon's audio engine opens the input raw and a level meter reads it.

Processing (echo cancellation, noise suppression, gain control) is off while listening, so the figures are what the
microphone itself delivers: automatic gain would hide a gain set too low or too high.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable

from kiosk.audio.engine import AudioEngine
from kiosk.audio.frames import MicFrame
from kiosk.audio.streams import StreamFactory
from kiosk.config import AudioConfig, TriggerConfig
from kiosk.errors import AudioDeviceError
from kiosk.hwtest.meter import LevelMeter, Reading, Summary


def raw_config(audio: AudioConfig, device: str | int | None) -> AudioConfig:
    """``audio`` with every processing stage off and the input set to ``device`` (None keeps the configured one)."""
    update: dict[str, object] = {
        "echo_cancellation": False,
        "noise_suppression": False,
        "high_pass_filter": False,
        "auto_gain": False,
    }
    if device is not None:
        update["input_device"] = device
    return audio.model_copy(update=update)


async def listen(
    *,
    audio: AudioConfig,
    trigger: TriggerConfig,
    factory: StreamFactory,
    seconds: float,
    on_reading: Callable[[Reading], None],
    stop: asyncio.Event | None = None,
) -> Summary:
    """Listen to ``audio.input_device`` for ``seconds`` (or until ``stop``); ``AudioDeviceError`` if it cannot open."""
    engine = AudioEngine(audio=audio, trigger=trigger, stream_factory=factory)
    meter = LevelMeter(vad=engine.vad)

    def on_frame(frame: MicFrame) -> None:
        reading = meter.push(frame.pcm, frame.t)
        if reading is not None:
            on_reading(reading)

    engine.subscribe_frames(on_frame)
    await engine.open_direction(engine.input)
    name = engine.input.device or "?"
    try:
        waiter = stop or asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), seconds)
    finally:
        await engine.close_direction(engine.input, None)
    return meter.summary(name)


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """One input tried by ``--scan``: its summary, or why it could not be opened."""

    index: int
    name: str
    summary: Summary | None = None
    error: str | None = None


async def scan(
    *,
    audio: AudioConfig,
    trigger: TriggerConfig,
    factory: StreamFactory,
    seconds: float,
    on_result: Callable[[ScanResult], None],
    on_start: Callable[[int, str], None] = lambda index, name: None,
    match: str | None = None,
) -> list[ScanResult]:
    """Listen to every input device (whose name contains ``match``, if given) for ``seconds`` each, in turn."""
    results: list[ScanResult] = []
    wanted = (match or "").lower()
    for device in [d for d in factory.devices() if d.max_input_channels > 0 and wanted in d.name.lower()]:
        on_start(device.index, device.name)
        try:
            summary = await listen(
                audio=raw_config(audio, device.index).model_copy(update={"input_channel": 0}),
                trigger=trigger,
                factory=factory,
                seconds=seconds,
                on_reading=lambda reading: None,
            )
            result = ScanResult(device.index, device.name, summary=summary)
        except AudioDeviceError as exc:
            result = ScanResult(device.index, device.name, error=str(exc).splitlines()[0])
        results.append(result)
        on_result(result)
    return results


def best(results: list[ScanResult]) -> ScanResult | None:
    """The input that heard the installer best: most speech, then the loudest above its floor; None if none heard."""
    heard = [r for r in results if r.summary is not None and r.summary.speech_s > 0 and not r.summary.clipped_samples]
    if not heard:
        heard = [r for r in results if r.summary is not None and r.summary.speech_s > 0]
    if not heard:
        return None

    def score(result: ScanResult) -> tuple[float, float]:
        assert result.summary is not None
        return (result.summary.speech_s, result.summary.loudest_dbfs - result.summary.floor_dbfs)

    return max(heard, key=score)
