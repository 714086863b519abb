"""The pre-connect audio buffer a client sends before the agent joined, as LiveKit agents receive it.

A client records the visitor while connecting and, once the agent is there, sends it as a byte stream on topic
``lk.agent.pre-connect-audio-buffer`` with attributes ``sampleRate``, ``channels`` and ``trackId`` (the published
microphone track). The payload is raw 16-bit little-endian PCM, or Opus when the mime type says so
(``audio/opus`` or ``...;codecs=opus``).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from livekit import rtc

logger = logging.getLogger(__name__)

PRECONNECT_TOPIC = "lk.agent.pre-connect-audio-buffer"
MAX_BYTES = 10 * 1024 * 1024


class PreconnectError(ValueError):
    """The pre-connect stream lacks required attributes or cannot be decoded."""


@dataclass(frozen=True)
class PreconnectAudio:
    """A decoded pre-connect buffer, downmixed to mono 16-bit samples at its own rate."""

    samples: npt.NDArray[np.int16]
    sample_rate: int
    channels: int
    mime_type: str
    track_id: str
    sender: str

    @property
    def seconds(self) -> float:
        """Duration of the buffer."""
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def is_opus(mime_type: str) -> bool:
    """Whether ``mime_type`` announces Opus rather than raw PCM."""
    return mime_type == "audio/opus" or "codecs=opus" in mime_type


async def read_preconnect(reader: rtc.ByteStreamReader, sender: str) -> PreconnectAudio:
    """Read the whole stream from ``reader`` and decode it."""
    attributes = reader.info.attributes or {}
    try:
        sample_rate = int(attributes["sampleRate"])
        channels = int(attributes["channels"])
    except (KeyError, ValueError) as exc:
        raise PreconnectError("pre-connect stream needs integer sampleRate and channels attributes") from exc
    if sample_rate <= 0 or channels <= 0:
        raise PreconnectError("pre-connect sampleRate and channels must be positive")
    payload = bytearray()
    async for chunk in reader:
        payload.extend(chunk)
        if len(payload) > MAX_BYTES:
            raise PreconnectError("pre-connect stream is larger than 10 MB")
    mime_type = reader.info.mime_type or ""
    if is_opus(mime_type):
        samples = _decode_opus(bytes(payload), sample_rate)
    else:
        usable = len(payload) - len(payload) % (2 * channels)
        interleaved = np.frombuffer(bytes(payload[:usable]), dtype="<i2").reshape(-1, channels)
        samples = interleaved.mean(axis=1).astype(np.int16)
    return PreconnectAudio(
        samples=samples,
        sample_rate=sample_rate,
        channels=channels,
        mime_type=mime_type,
        track_id=attributes.get("trackId", ""),
        sender=sender,
    )


def _decode_opus(payload: bytes, sample_rate: int) -> npt.NDArray[np.int16]:
    """Decode Opus in an Ogg or WebM container to mono samples at ``sample_rate`` (needs PyAV)."""
    try:
        import av
    except ImportError as exc:
        raise PreconnectError("decoding Opus pre-connect audio needs PyAV (the sandbox extra)") from exc
    parts: list[npt.NDArray[np.int16]] = []
    try:
        with av.open(io.BytesIO(payload), mode="r") as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            for frame in container.decode(audio=0):
                parts.extend(f.to_ndarray().reshape(-1).astype(np.int16) for f in resampler.resample(frame))
    except av.FFmpegError as exc:
        raise PreconnectError(f"cannot decode Opus pre-connect audio: {exc}") from exc
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)
