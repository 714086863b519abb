"""The pre-connect audio buffer a client sends before the agent joined, as LiveKit agents receive it.

A client records the visitor while connecting and, once the agent is there, sends it as a byte stream on topic
``lk.agent.pre-connect-audio-buffer`` with attributes ``sampleRate``, ``channels`` and ``trackId`` (the published
microphone track). The payload is raw 16-bit little-endian PCM, or Opus when the mime type says so
(``audio/opus`` or ``...;codecs=opus``, as livekit-agents' ``PreConnectAudioHandler`` tells them apart): Ogg Opus
from the kiosk (``audio/ogg;codecs=opus``), WebM from the JS SDK (``audio/webm;codecs=opus``), decoded and resampled
to ``sampleRate`` like the framework's ``AudioStreamDecoder``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
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
        # Decoding takes milliseconds per second of audio: off the loop, as livekit-agents decodes in a thread.
        samples = await asyncio.to_thread(_decode_opus, bytes(payload), sample_rate)
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
    """Decode Opus in any container FFmpeg recognises from its first bytes (Ogg from the kiosk, WebM from the JS SDK),
    as livekit-agents' ``AudioStreamDecoder`` does, to mono samples at ``sample_rate`` (needs PyAV)."""
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
            # The resampler holds back its last few milliseconds until flushed.
            parts.extend(f.to_ndarray().reshape(-1).astype(np.int16) for f in resampler.resample(None))
    except av.FFmpegError as exc:
        raise PreconnectError(f"cannot decode Opus pre-connect audio: {exc}") from exc
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)


#: livekit-agents' defaults (``RoomInputOptions.pre_connect_audio_timeout`` and ``PreConnectAudioHandler``'s
#: ``max_delta_s``): a buffer must be received completely within 3 s of its first byte, the agent waits at most 3 s
#: after subscribing for one, and a buffer completed more than 1 s before the agent asks for it is stale.
RECEIVE_TIMEOUT_S = 3.0
WAIT_TIMEOUT_S = 3.0
MAX_AGE_S = 1.0


class PreconnectInbox:
    """Pre-connect buffers by microphone track id, taken the way a LiveKit agent takes them.

    Register :meth:`on_stream` as the byte stream handler of :data:`PRECONNECT_TOPIC`; when the visitor's microphone
    is subscribed and its publication carries ``TF_PRECONNECT_BUFFER``, :meth:`take` returns the buffer, or None with
    :attr:`rejected` saying why (never received, received too slowly, too old, undecodable).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buffers: dict[str, asyncio.Future[tuple[PreconnectAudio, float]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.rejected = ""
        #: When the first pre-connect stream began to arrive (``clock()``), for latency figures.
        self.arrived_at: float | None = None
        #: When :meth:`take` began waiting (``clock()``).
        self.waited_from: float | None = None

    def on_stream(self, reader: rtc.ByteStreamReader, sender: str) -> None:
        """Byte stream handler: read the buffer in the background, dropped whole if it takes too long."""
        self.arrived_at = self.arrived_at or self._clock()
        track_id = (reader.info.attributes or {}).get("trackId", "")
        if not track_id:
            self.rejected = "pre-connect stream without a trackId attribute"
            return
        future = self._buffers.get(track_id)
        if future is None or future.done():
            future = self._buffers[track_id] = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(self._read(reader, sender, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(
        self, reader: rtc.ByteStreamReader, sender: str, future: asyncio.Future[tuple[PreconnectAudio, float]]
    ) -> None:
        try:
            async with asyncio.timeout(RECEIVE_TIMEOUT_S):
                audio = await read_preconnect(reader, sender)
        except TimeoutError:
            self._fail(future, f"not completely received within {RECEIVE_TIMEOUT_S:.0f} s")
        except PreconnectError as exc:
            self._fail(future, str(exc))
        else:
            if not future.done():
                future.set_result((audio, self._clock()))

    def _fail(self, future: asyncio.Future[tuple[PreconnectAudio, float]], why: str) -> None:
        logger.warning("pre-connect audio rejected: %s", why)
        self.rejected = why
        if not future.done():
            future.cancel()

    async def take(self, track_id: str) -> PreconnectAudio | None:
        """The buffer for ``track_id``, waiting up to :data:`WAIT_TIMEOUT_S`; None if none is usable."""
        future = self._buffers.setdefault(track_id, asyncio.get_running_loop().create_future())
        self.waited_from = self._clock()
        try:
            if future.done() and not future.cancelled():
                audio, received_at = future.result()
                if (age := self._clock() - received_at) > MAX_AGE_S:
                    self.rejected = f"too old when the agent listened ({age:.1f} s)"
                    return None
                return audio
            audio, _ = await asyncio.wait_for(asyncio.shield(future), WAIT_TIMEOUT_S)
            return audio
        except TimeoutError:
            late = "not completely received" if self.arrived_at is not None else "none arrived"
            self.rejected = self.rejected or f"{late} within {WAIT_TIMEOUT_S:.0f} s of subscribing"
            return None
        except asyncio.CancelledError:
            if future.cancelled():
                return None
            raise
        finally:
            self._buffers.pop(track_id, None)

    async def aclose(self) -> None:
        """Stop reading buffers still arriving."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
