"""The engine's one audio format: 48 kHz mono int16 in 10 ms frames, and conversions into it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from livekit import rtc

SAMPLE_RATE = 48_000
FRAME_MS = 10
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000

Pcm = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class MicFrame:
    """One processed 10 ms microphone frame and the monotonic time its last sample was captured."""

    t: float
    pcm: Pcm


def to_rtc(pcm: Pcm) -> rtc.AudioFrame:
    """Wrap 48 kHz mono int16 samples in an ``rtc.AudioFrame``."""
    return rtc.AudioFrame(bytearray(pcm.tobytes()), SAMPLE_RATE, 1, len(pcm))


def as_mono(frame: rtc.AudioFrame | npt.NDArray[np.generic]) -> Pcm:
    """Return 48 kHz mono int16 samples from an ``rtc.AudioFrame`` or a numpy array.

    An ``rtc.AudioFrame`` must already be 48 kHz (``rtc.AudioStream(track, sample_rate=48000, num_channels=1)``
    does that); a multi-channel frame is averaged down. Float arrays are taken as -1.0..1.0.
    """
    if isinstance(frame, rtc.AudioFrame):
        if frame.sample_rate != SAMPLE_RATE:
            raise ValueError(f"expected {SAMPLE_RATE} Hz frames, got {frame.sample_rate} Hz")
        data = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
        mono: Pcm = data[:, 0].copy() if frame.num_channels == 1 else data.mean(axis=1).astype(np.int16)
        return mono
    array = np.asarray(frame)
    if array.ndim == 2:
        array = array.mean(axis=1) if array.dtype.kind == "f" else array.mean(axis=1).astype(array.dtype)
    if array.dtype.kind == "f":
        return np.clip(np.round(array * 32767.0), -32768, 32767).astype(np.int16)
    return array.astype(np.int16, copy=True)


class Framer:
    """Cuts a stream of sample blocks into fixed-size frames, keeping the remainder for the next block."""

    def __init__(self, size: int = FRAME_SAMPLES) -> None:
        self._size = size
        self._rest: Pcm = np.zeros(0, dtype=np.int16)

    @property
    def pending(self) -> int:
        """Samples held back because they do not fill a frame yet."""
        return len(self._rest)

    def push(self, block: Pcm) -> list[Pcm]:
        """Add a block and return every complete frame now available."""
        data = np.concatenate((self._rest, block)) if len(self._rest) else block
        whole = len(data) // self._size * self._size
        self._rest = data[whole:].copy()
        return [data[i : i + self._size] for i in range(0, whole, self._size)]


class Resampler:
    """int16 mono resampling with LiveKit's sox resampler, a pass-through when the rates match."""

    def __init__(self, input_rate: int, output_rate: int) -> None:
        self.input_rate = input_rate
        self.output_rate = output_rate
        self._rtc = (
            None
            if input_rate == output_rate
            else rtc.AudioResampler(input_rate, output_rate, num_channels=1, quality=rtc.AudioResamplerQuality.MEDIUM)
        )

    def push(self, block: Pcm) -> Pcm:
        """Resample a block; the output may be shorter or longer while the filter fills."""
        if self._rtc is None:
            return block
        out = self._rtc.push(bytearray(block.tobytes()))
        if not out:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])


def dbfs(pcm: Pcm) -> float:
    """Root-mean-square level of int16 samples in dB relative to full scale (-120 for digital silence)."""
    if len(pcm) == 0:
        return -120.0
    wide = pcm.astype(np.float32)
    rms = float(np.sqrt(np.dot(wide, wide) / len(wide)))
    return -120.0 if rms < 1e-3 else 20.0 * float(np.log10(rms / 32768.0))
