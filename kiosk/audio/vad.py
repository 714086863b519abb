"""Voice activity segments from webrtcvad: onset, offset and wake events over 48 kHz mic frames.

Frames are judged at 16 kHz (webrtcvad's own working rate for speech; a third of the cost of 48 kHz), in frames
of ``frame_ms`` (10, 20 or 30 ms: webrtcvad's sizes). The engine feeds 30 ms frames: one call per 30 ms.

webrtcvad judges single frames and is fooled by some noise and music, so a frame only counts as speech when
webrtcvad says so *and* it stands out from the recent noise floor; segments then need most of a window voiced.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import webrtcvad

from kiosk.audio.frames import SAMPLE_RATE, Pcm, dbfs

#: Share of a window's frames that must be speech for an onset or a wake.
VOICED_SHARE = 0.8
#: Level history behind the noise floor estimate (ms).
FLOOR_MS = 2000
#: The noise floor is re-estimated this often (ms).
FLOOR_EVERY_MS = 100
#: The rate frames are judged at (Hz); the 48 kHz input is decimated by 3 to reach it.
VAD_RATE = 16_000
#: Frame sizes webrtcvad accepts (ms).
VAD_FRAME_MS = (10, 20, 30)
#: Speech rises and falls with its syllables; a held musical note or a machine hum does not. A wake needs the level
#: over its window to vary at least this much (standard deviation of the frames' dBFS).
WAKE_MIN_LEVEL_SPREAD_DB = 3.0


class VadEventKind(enum.StrEnum):
    """What happened to the visitor's voice."""

    ONSET = "onset"
    OFFSET = "offset"
    WAKE = "wake"


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A segment event: ``t`` is when it was decided, ``speech_start`` when the segment's speech began.

    A wake also carries ``level_dbfs``: the median level (dBFS) of the processed frames in the wake window.
    """

    kind: VadEventKind
    t: float
    speech_start: float
    level_dbfs: float | None = None


def decimate(pcm: Pcm) -> Pcm:
    """48 kHz to 16 kHz by averaging each 3 samples (a boxcar: nulls at 16 and 32 kHz; enough for a VAD).

    ``pcm`` must hold a multiple of 3 samples; returns a new int16 array a third as long.
    """
    wide = np.add.reduce(pcm.reshape(-1, 3), axis=1, dtype=np.int32)
    np.floor_divide(wide, 3, out=wide)
    out: Pcm = wide.astype(np.int16)
    return out


class VoiceActivity:
    """Segment logic over webrtcvad decisions; feed it every 48 kHz frame of ``frame_ms`` in order.

    Raises:
        ValueError: ``frame_ms`` is not one of webrtcvad's sizes (10, 20, 30).
    """

    def __init__(
        self,
        *,
        aggressiveness: int,
        onset_ms: int,
        offset_ms: int,
        wake_ms: int,
        margin_db: float = 9.0,
        min_dbfs: float = -55.0,
        frame_ms: int = 10,
    ) -> None:
        if frame_ms not in VAD_FRAME_MS:
            raise ValueError(f"a VAD frame is 10, 20 or 30 ms, not {frame_ms}")
        self.frame_ms = frame_ms
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000
        self._vad = webrtcvad.Vad(aggressiveness)
        self._onset = _Window(onset_ms, frame_ms)
        self._wake = _Window(wake_ms, frame_ms)
        self._offset_frames = max(1, offset_ms // frame_ms)
        self._margin_db = margin_db
        self._min_dbfs = min_dbfs
        self._floor_every = max(1, FLOOR_EVERY_MS // frame_ms)
        # A ring of recent levels for the floor (np.percentile over a deque cost ~140 us; this ~10 us).
        self._levels = np.zeros(FLOOR_MS // frame_ms, dtype=np.float32)
        self._levels_n = 0
        self._wake_levels: deque[float] = deque(maxlen=max(1, wake_ms // frame_ms))
        #: Frames judged so far (each one webrtcvad call at most).
        self.judged = 0
        self._floor = min_dbfs
        self._frames = 0
        self._silent_run = 0
        self._segment_start = 0.0
        self._woken = False
        self._wake_gate_until = float("-inf")
        self.speaking = False
        self.last_speech_t: float | None = None

    @property
    def noise_floor_dbfs(self) -> float:
        """The current noise floor estimate."""
        return self._floor

    def gate_wake(self, until: float) -> None:
        """Ignore speech for waking until ``until`` (the kiosk's own sounds are playing)."""
        self._wake_gate_until = max(self._wake_gate_until, until)

    def is_speech(self, pcm: Pcm) -> bool:
        """Judge one 48 kHz frame: webrtcvad says speech and the level stands out from the noise floor."""
        narrow = decimate(pcm)
        level = dbfs(narrow)
        self._levels[self._frames % len(self._levels)] = level
        self._levels_n = min(self._levels_n + 1, len(self._levels))
        self._wake_levels.append(level)
        self._frames += 1
        if (self._frames - 1) % self._floor_every == 0:
            self._floor = _tenth_percentile(self._levels[: self._levels_n])
        if level < max(self._min_dbfs, self._floor + self._margin_db):
            return False
        self.judged += 1
        return bool(self._vad.is_speech(narrow.tobytes(), VAD_RATE))

    def push(self, pcm: Pcm, t: float) -> list[VadEvent]:
        """Add one 48 kHz frame of ``frame_ms`` whose last sample was captured at ``t``; return its events."""
        speech = self.is_speech(pcm)
        events: list[VadEvent] = []
        self._onset.add(speech, t)
        self._wake.add(speech and t >= self._wake_gate_until, t)
        if not self.speaking:
            if self._onset.voiced():
                self.speaking = True
                self._woken = False
                self._silent_run = 0
                self._segment_start = self._onset.first_speech_t()
                self.last_speech_t = t
                events.append(VadEvent(VadEventKind.ONSET, t, self._segment_start))
        elif speech:
            self._silent_run = 0
            self.last_speech_t = t
        else:
            self._silent_run += 1
            if self._silent_run >= self._offset_frames:
                self.speaking = False
                events.append(VadEvent(VadEventKind.OFFSET, t, self._segment_start))
        if self.speaking and not self._woken and self._wake.voiced() and self._modulated():
            self._woken = True
            level = float(np.median(np.fromiter(self._wake_levels, dtype=np.float32)))
            events.append(VadEvent(VadEventKind.WAKE, t, self._segment_start, level_dbfs=level))
        return events

    def _modulated(self) -> bool:
        return float(np.std(np.fromiter(self._wake_levels, dtype=np.float32))) >= WAKE_MIN_LEVEL_SPREAD_DB


def _tenth_percentile(values: npt.NDArray[np.float32]) -> float:
    """``np.percentile(values, 10)`` (linear interpolation) by partial sorting."""
    position = 0.1 * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    part = np.partition(values, (low, high))
    return float(part[low] + (part[high] - part[low]) * (position - low))


class _Window:
    """The last ``ms`` (plus slack) of speech decisions with their times."""

    def __init__(self, ms: int, frame_ms: int) -> None:
        self._frame_s = frame_ms / 1000
        self._need = max(1, ms // frame_ms)
        self._frames: deque[tuple[bool, float]] = deque(maxlen=int(np.ceil(self._need / VOICED_SHARE)))
        self._count = 0

    def add(self, speech: bool, t: float) -> None:
        if len(self._frames) == self._frames.maxlen and self._frames[0][0]:
            self._count -= 1
        self._frames.append((speech, t))
        self._count += speech

    def voiced(self) -> bool:
        return self._count >= self._need

    def first_speech_t(self) -> float:
        # The frame's time marks its last sample: the speech began one frame earlier.
        first = next(t for speech, t in self._frames if speech)
        return first - self._frame_s
