"""The first words encoded while the session connects: Ogg Opus ready when the agent subscribes.

The visitor's first words (everything a session holds until the agent receives the microphone) go to the agent as
LiveKit's pre-connect buffer, and an agent on ``livekit-agents`` drops a buffer it has not received whole within
3 s of subscribing. Encoding them only then puts the encode (about 15 ms of CPU per second of speech on x86-64, a
second or more on a kiosk short of CPU) and ten times the bytes of raw PCM on that 3 s path. So each frame the session
holds is handed to :class:`FirstWordsEncoder`, whose worker thread resamples it to 16 kHz (LiveKit's resampler) and
encodes it (:class:`kiosk.audio.opus.OggOpusWriter`) every :data:`BATCH_FRAMES` frames; at the subscription only
the last batch is left. When anything goes wrong (no Opus here, the held audio overran its limit) the buffer is
encoded whole as before.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging

import numpy as np
from livekit import rtc

from kiosk.audio import opus
from kiosk.audio.frames import SAMPLE_RATE, Pcm

log = logging.getLogger(__name__)

#: Frames (10 ms) encoded together: one worker task per half second of held speech.
BATCH_FRAMES = 50
#: The rate the first words are encoded at (what speech recognisers work at).
ENCODE_RATE = 16_000


class FirstWordsEncoder:
    """Encodes the frames a session holds, in order, on its own worker thread; :meth:`seal` gives the stream."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="first-words")
        self._pending: list[Pcm] = []
        self._writer: opus.OggOpusWriter | None = None
        self._resampler: rtc.AudioResampler | None = None
        #: Frames handed over so far.
        self.frames = 0
        self._failed = False
        self._sealed = False

    def feed(self, pcm: Pcm) -> None:
        """Loop side: the next held 10 ms frame (48 kHz mono int16)."""
        if self._sealed:
            return
        self._pending.append(pcm)
        self.frames += 1
        if len(self._pending) >= BATCH_FRAMES:
            self._submit()

    def seal(self) -> concurrent.futures.Future[bytes | None]:
        """Loop side: no more frames; the whole Ogg Opus stream (None when it could not be encoded), once the worker
        has encoded what was left."""
        self._submit()
        self._sealed = True
        future = self._executor.submit(self._finish)
        self._executor.shutdown(wait=False)
        return future

    def discard(self) -> None:
        """Loop side: the first words will not be sent from here (the session ended, or they overran their limit);
        the worker skips what is left and closes the stream."""
        if self._sealed:
            return
        self._sealed = True
        self._failed = True
        self._executor.submit(self._close)
        self._executor.shutdown(wait=False)

    def _submit(self) -> None:
        if self._pending and not self._sealed:
            batch, self._pending = np.concatenate(self._pending), []
            self._executor.submit(self._encode, batch)

    def _encode(self, batch: Pcm) -> None:
        # Worker thread.
        if self._failed:
            return
        try:
            if self._writer is None:
                self._writer = opus.OggOpusWriter(ENCODE_RATE)
                self._resampler = rtc.AudioResampler(
                    SAMPLE_RATE, ENCODE_RATE, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH
                )
            assert self._resampler is not None
            for frame in self._resampler.push(bytearray(batch.tobytes())):
                self._writer.write(np.frombuffer(bytes(frame.data), dtype=np.int16))
        except (ValueError, RuntimeError, OSError) as exc:  # OpusUnavailableError, libsndfile's errors
            self._failed = True
            log.info("the first words are not encoded ahead (%s); they are encoded when sent", exc)
        except Exception:  # the worker's boundary (LiveKit's resampler raises a bare Exception)
            self._failed = True
            log.exception("the first words are not encoded ahead; they are encoded when sent")

    def _close(self) -> None:
        # Worker thread: libsndfile writes its last pages into the buffer as it closes; never after the buffer goes.
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.finish()
            self._writer = None

    def _finish(self) -> bytes | None:
        # Worker thread.
        if self._failed or self._writer is None or self._resampler is None:
            self._close()
            return None
        try:
            for frame in self._resampler.flush():
                self._writer.write(np.frombuffer(bytes(frame.data), dtype=np.int16))
            return self._writer.finish()
        except Exception:  # the worker's boundary, as in _encode
            log.exception("the first words' stream could not be finished; they are encoded when sent")
            self._writer = None
            return None
