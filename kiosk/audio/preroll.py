"""First words kept: a ring of recent mic audio, and a session capture that holds audio until the room is live."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from kiosk.audio import opus
from kiosk.audio.firstwords import ENCODE_RATE, FirstWordsEncoder
from kiosk.audio.frames import FRAME_MS, SAMPLE_RATE, MicFrame

log = logging.getLogger(__name__)

#: Live frames waiting for the consumer before the oldest is dropped (2 s).
LIVE_QUEUE_FRAMES = 200
#: A LiveKit agent drops a pre-connect buffer it has not received completely within 3 s of its first byte
#: (livekit-agents ``pre_connect_audio_timeout``): the buffer may take at most 2 s of a 1 Mbit/s uplink.
UPLINK_BUDGET_BITS = 2_000_000
#: Rates for raw PCM, best first: 16 kHz is what speech recognisers work at, 8 kHz the telephone band.
#: 16-bit PCM at 16 kHz fits the budget up to 7.8 s of speech, at 8 kHz up to 15.6 s.
UPLINK_RATES = (16000, 8000)
#: The rate the buffer goes at (Opus is encoded at 16 kHz whatever the length: at 24 kbit/s it fits the budget for
#: 83 s of speech).
UPLINK_RATE = UPLINK_RATES[0]
#: Mime type of raw 16-bit little-endian PCM in a pre-connect stream (what livekit-agents reads when not Opus).
PCM_MIME = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class PreConnectAudio:
    """Audio captured before the room was live: int16 48 kHz mono little-endian bytes."""

    pcm: bytes
    duration_s: float
    sample_rate: int = SAMPLE_RATE
    num_channels: int = 1
    dropped_s: float = 0.0
    #: The same audio as 16 kHz Ogg Opus, encoded while it was held (:mod:`kiosk.audio.firstwords`); its result is
    #: None when that failed.
    opus: concurrent.futures.Future[bytes | None] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class UplinkBuffer:
    """The pre-connect buffer as it is sent: ``payload`` of ``mime_type`` (Ogg Opus, or raw PCM as a fallback)
    that decodes to ``duration_s`` of audio at ``sample_rate`` Hz with ``num_channels`` channels (the stream's
    ``sampleRate`` and ``channels`` attributes)."""

    payload: bytes
    mime_type: str
    sample_rate: int
    num_channels: int
    duration_s: float
    encode_ms: float = 0.0

    @property
    def codec(self) -> str:
        """``opus`` or ``pcm``, for logs."""
        return "opus" if self.mime_type == opus.OGG_OPUS_MIME else "pcm"


def _resample(audio: PreConnectAudio, rate: int) -> PreConnectAudio:
    """``audio`` at ``rate`` Hz (LiveKit's resampler, high quality; a few ms per second of audio)."""
    if not audio.pcm or rate == audio.sample_rate:
        return audio
    resampler = rtc.AudioResampler(audio.sample_rate, rate, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)
    frames = [*resampler.push(bytearray(audio.pcm)), *resampler.flush()]
    pcm = b"".join(bytes(f.data) for f in frames)
    return dataclasses.replace(audio, pcm=pcm, sample_rate=rate, duration_s=len(pcm) / 2 / rate)


def for_uplink(audio: PreConnectAudio) -> PreConnectAudio:
    """The buffer at :data:`UPLINK_RATE` (16 kHz), the rate speech recognisers work at (blocking: a few ms per
    second of audio)."""
    return _resample(audio, UPLINK_RATE)


def encoded_ahead(audio: PreConnectAudio, payload: bytes, waited_ms: float) -> UplinkBuffer:
    """The buffer encoded while it was held (``payload``, 16 kHz Ogg Opus); ``waited_ms`` for its last part."""
    return UplinkBuffer(
        payload=payload,
        mime_type=opus.OGG_OPUS_MIME,
        sample_rate=ENCODE_RATE,
        num_channels=audio.num_channels,
        duration_s=audio.duration_s,
        encode_ms=waited_ms,
    )


def encode_for_uplink(audio: PreConnectAudio) -> UplinkBuffer:
    """The buffer at 16 kHz (:func:`for_uplink`) compressed as Ogg Opus (:mod:`kiosk.audio.opus`, 24 kbit/s), or raw PCM when that cannot be done
    here, logged as a warning; PCM goes at the best rate of :data:`UPLINK_RATES` that fits
    :data:`UPLINK_BUDGET_BITS` (about ten times the bytes of Opus: it may miss the agent's 3 s window on a lossy
    link). Empty audio goes as empty PCM.

    Blocking, CPU bound (about 15 ms of CPU per second of speech on x86-64, see
    :func:`kiosk.audio.opus.encode_ogg_opus`): run it in a thread.
    """
    started = time.perf_counter()
    audio = for_uplink(audio)
    if audio.pcm:
        try:
            payload = opus.encode_ogg_opus(audio.pcm, audio.sample_rate, audio.num_channels)
        except (ValueError, RuntimeError, OSError) as exc:  # OpusUnavailableError, libsndfile's errors
            log.warning("first words go as raw PCM (%d kB), not Opus: %s", len(audio.pcm) // 1024, exc)
        else:
            return UplinkBuffer(
                payload=payload,
                mime_type=opus.OGG_OPUS_MIME,
                sample_rate=audio.sample_rate,
                num_channels=audio.num_channels,
                duration_s=audio.duration_s,
                encode_ms=(time.perf_counter() - started) * 1000,
            )
    return pcm_for_uplink(audio, started=started)


def pcm_for_uplink(audio: PreConnectAudio, *, started: float | None = None) -> UplinkBuffer:
    """The buffer as raw PCM at the best rate of :data:`UPLINK_RATES` that fits :data:`UPLINK_BUDGET_BITS` (no Opus:
    where it cannot be encoded here, or not in time). ``started`` (``time.perf_counter()``) dates ``encode_ms``."""
    started = time.perf_counter() if started is None else started
    fits = next((r for r in UPLINK_RATES if audio.duration_s * r * 16 <= UPLINK_BUDGET_BITS), UPLINK_RATES[-1])
    pcm = _resample(audio, min(fits, audio.sample_rate))
    return UplinkBuffer(
        payload=pcm.pcm,
        mime_type=PCM_MIME,
        sample_rate=pcm.sample_rate,
        num_channels=pcm.num_channels,
        duration_s=pcm.duration_s,
        encode_ms=(time.perf_counter() - started) * 1000,
    )


class PreRoll:
    """The last ``pre_roll_ms`` of processed mic frames."""

    def __init__(self, pre_roll_ms: int) -> None:
        self._ring: deque[MicFrame] = deque(maxlen=max(1, pre_roll_ms // FRAME_MS))
        self._enabled = pre_roll_ms > 0

    def push(self, frame: MicFrame) -> None:
        """Remember a frame (the oldest falls out)."""
        if self._enabled:
            self._ring.append(frame)

    def since(self, start: float) -> list[MicFrame]:
        """Frames whose audio ends after ``start``, oldest first."""
        return [f for f in self._ring if f.t > start]


class SessionCapture:
    """All mic audio of one session from its start: held until :meth:`take_preconnect`, then streamed.

    Iterate it (``async for frame in capture``) after taking the pre-connect audio to receive every later
    frame, with no gap and no duplicate. :meth:`close` ends the iteration.
    """

    def __init__(
        self,
        *,
        start: float,
        backlog: list[MicFrame],
        max_s: float,
        on_close: Callable[[SessionCapture], None],
        encoder: FirstWordsEncoder | None = None,
    ) -> None:
        """``encoder`` (when given) encodes every held frame while the session connects."""
        self.start = start
        self._held: deque[MicFrame] = deque(backlog, maxlen=max(1, int(max_s * 1000) // FRAME_MS))
        self._max_frames = self._held.maxlen or 1
        self._dropped = max(0, len(backlog) - self._max_frames)
        self._encoder = encoder
        if encoder is not None:
            for frame in self._held:
                encoder.feed(frame.pcm)
        self._live: asyncio.Queue[MicFrame | None] | None = None
        self._on_close = on_close
        self.live_dropped = 0
        self.closed = False

    @property
    def held_s(self) -> float:
        """Seconds of audio held for the agent so far."""
        return len(self._held) * FRAME_MS / 1000

    def feed(self, frame: MicFrame) -> None:
        """Engine side: add the next processed frame."""
        if self.closed:
            return
        if self._live is None:
            if len(self._held) == self._max_frames:
                self._dropped += 1
                if self._encoder is not None:
                    # The oldest frame goes: what was encoded ahead can no longer be what is held.
                    self._encoder.discard()
                    self._encoder = None
            self._held.append(frame)
            if self._encoder is not None:
                self._encoder.feed(frame.pcm)
            return
        if self._live.full():
            # The consumer is behind: the oldest audio is the least useful to a live conversation.
            self._live.get_nowait()
            self.live_dropped += 1
        self._live.put_nowait(frame)

    def take_preconnect(self) -> PreConnectAudio:
        """Return everything held since the start (once); later frames go to the live iterator."""
        if self._live is not None:
            raise RuntimeError("pre-connect audio was already taken")
        frames = list(self._held)
        self._held.clear()
        self._live = asyncio.Queue(maxsize=LIVE_QUEUE_FRAMES)
        pcm = np.concatenate([f.pcm for f in frames]).tobytes() if frames else b""
        if self._dropped:
            log.warning("pre-connect audio exceeded its limit: %d ms dropped", self._dropped * FRAME_MS)
        encoded = None
        if self._encoder is not None:
            # What the encoder has is exactly what is held unless the limit dropped the oldest frames.
            encoded = self._encoder.seal() if not self._dropped and frames else None
            if encoded is None:
                self._encoder.discard()
            self._encoder = None
        return PreConnectAudio(
            pcm=pcm,
            duration_s=len(pcm) / 2 / SAMPLE_RATE,
            dropped_s=self._dropped * FRAME_MS / 1000,
            opus=encoded,
        )

    def close(self) -> None:
        """Stop capturing for this session."""
        if self.closed:
            return
        self.closed = True
        self._held.clear()
        if self._encoder is not None:
            self._encoder.discard()
            self._encoder = None
        if self._live is not None:
            if self._live.full():
                self._live.get_nowait()
            self._live.put_nowait(None)
        self._on_close(self)

    def __aiter__(self) -> AsyncIterator[MicFrame]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[MicFrame]:
        if self._live is None:
            raise RuntimeError("take the pre-connect audio before iterating live frames")
        while True:
            frame = await self._live.get()
            if frame is None:
                return
            yield frame
