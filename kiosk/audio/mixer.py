"""A real-time mixer of named 48 kHz mono inputs, pulled one 10 ms frame at a time on the event loop.

``rtc.AudioMixer`` waits on async streams with timeouts and emits 100 ms blocks; the speaker needs a frame
on demand, so this mixer is pull-based: inputs are pushed as frames arrive, the playback pulls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from livekit import rtc

from kiosk.audio.frames import FRAME_SAMPLES, SAMPLE_RATE, Pcm, as_mono

#: Most audio an input may hold before its oldest samples are dropped.
MAX_BUFFER_S = 10.0


def _nothing() -> None:
    """The default ``on_audio``."""


class MixerInput:
    """One named source: push frames in, the mixer takes them out at the speaker's pace."""

    def __init__(
        self, name: str, *, gain: float, prime_ms: int, streaming: bool, on_push: Callable[[], None] | None = None
    ) -> None:
        self.name = name
        self._on_push = on_push
        self.gain = gain
        self.streaming = streaming
        self._prime = prime_ms * SAMPLE_RATE // 1000
        self._chunks: deque[Pcm] = deque()
        self._queued = 0
        self._playing = False
        self.starved = 0
        self.overflow_samples = 0
        # The last frame taken (never changed afterwards), for :attr:`level`; None while silent.
        self._last: Pcm | None = None
        #: Called on the loop with every chunk the mixer takes from this input (the turn timer listens to the agent).
        self.listener: Callable[[Pcm], None] | None = None

    @property
    def queued_samples(self) -> int:
        """Samples waiting to be played."""
        return self._queued

    @property
    def active(self) -> bool:
        """True while the input is playing or has audio waiting."""
        return self._playing or self._queued > 0

    @property
    def level(self) -> float:
        """Loudness of the last frame taken, 0..1 (RMS over full scale, times 4 so speech reaches about 1).

        Computed by the reader (the LED ring's thread, only while it follows the agent's voice), not on the loop;
        the frame it reads is replaced whole, never changed, so no lock is needed.
        """
        last = self._last
        if last is None:
            return 0.0
        return min(1.0, 4 * float(np.sqrt(np.mean(np.square(last, dtype=np.float32)))) / 32768)

    def push(self, frame: rtc.AudioFrame | npt.NDArray[np.generic]) -> None:
        """Queue 48 kHz mono audio (an ``rtc.AudioFrame`` or a numpy array)."""
        pcm = as_mono(frame)
        if len(pcm) == 0:
            return
        self._chunks.append(pcm)
        self._queued += len(pcm)
        limit = int(MAX_BUFFER_S * SAMPLE_RATE)
        while self._queued - len(self._chunks[0]) >= limit:
            dropped = self._chunks.popleft()
            self._queued -= len(dropped)
            self.overflow_samples += len(dropped)
        if self._on_push is not None:
            self._on_push()

    def clear(self) -> None:
        """Drop everything queued (the agent was interrupted, a chime cut short)."""
        self._chunks.clear()
        self._queued = 0
        self._playing = False

    def take(self, n: int) -> Pcm | None:
        """Up to ``n`` samples, zero-padded; None while silent or priming. Counts a streaming input running dry (``starved``)."""
        if not self._playing:
            if self._queued == 0 or self._queued < self._prime:
                self._last = None
                return None
            self._playing = True
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self._chunks:
            chunk = self._chunks[0]
            use = min(n - filled, len(chunk))
            out[filled : filled + use] = chunk[:use]
            filled += use
            if use == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[use:]
        self._queued -= filled
        self._last = out
        if filled < n:
            # Ran dry while playing: re-prime before playing again so the gap is not a crackle.
            self._playing = False
            self.starved += self.streaming
        return out if filled else None


class Mixer:
    """Sums named inputs with their gains and the master volume into one 10 ms frame."""

    def __init__(self, *, volume: float) -> None:
        self.volume = volume
        self._inputs: dict[str, MixerInput] = {}
        #: Called on the loop whenever an input receives audio (the speaker wakes from silence).
        self.on_audio: Callable[[], None] = _nothing

    def add_input(self, name: str, *, gain: float = 1.0, prime_ms: int = 40, streaming: bool = True) -> MixerInput:
        """Create (or return the existing) input ``name``."""
        if name not in self._inputs:
            self._inputs[name] = MixerInput(
                name, gain=gain, prime_ms=prime_ms, streaming=streaming, on_push=self._pushed
            )
        return self._inputs[name]

    def _pushed(self) -> None:
        self.on_audio()

    @property
    def active(self) -> bool:
        """True while any input plays or has audio waiting."""
        return any(source.active for source in self._inputs.values())

    @property
    def inputs(self) -> dict[str, MixerInput]:
        """The inputs by name."""
        return dict(self._inputs)

    def mix(self, n: int = FRAME_SAMPLES) -> tuple[Pcm, bool]:
        """The next ``n`` samples of the mix, and whether any input contributed."""
        total: npt.NDArray[np.float32] | None = None
        for source in self._inputs.values():
            part = source.take(n)
            if part is None:
                continue
            if source.listener is not None:
                source.listener(part)
            scaled = part.astype(np.float32) * (source.gain * self.volume)
            total = scaled if total is None else total + scaled
        if total is None:
            return np.zeros(n, dtype=np.int16), False
        return np.clip(np.round(total), -32768, 32767).astype(np.int16), True
