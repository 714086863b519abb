"""Voice activity segments from webrtcvad: onset, offset and wake events over processed 10 ms frames.

webrtcvad judges single frames and is fooled by some noise and music, so a frame only counts as speech when
webrtcvad says so *and* it stands out from the recent noise floor; segments then need most of a window voiced.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from kiosk.audio.frames import FRAME_MS, SAMPLE_RATE, Pcm, dbfs

#: Share of a window's frames that must be speech for an onset or a wake.
VOICED_SHARE = 0.8
#: Frames of level history behind the noise floor estimate (2 s).
FLOOR_FRAMES = 200
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


class VoiceActivity:
    """Segment logic over webrtcvad decisions; feed it every processed frame in order."""

    def __init__(
        self,
        *,
        aggressiveness: int,
        onset_ms: int,
        offset_ms: int,
        wake_ms: int,
        margin_db: float = 9.0,
        min_dbfs: float = -55.0,
    ) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._onset = _Window(onset_ms)
        self._wake = _Window(wake_ms)
        self._offset_frames = max(1, offset_ms // FRAME_MS)
        self._margin_db = margin_db
        self._min_dbfs = min_dbfs
        self._levels: deque[float] = deque(maxlen=FLOOR_FRAMES)
        self._wake_levels: deque[float] = deque(maxlen=max(1, wake_ms // FRAME_MS))
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
        """Judge one frame: webrtcvad says speech and the level stands out from the noise floor."""
        level = dbfs(pcm)
        self._levels.append(level)
        self._wake_levels.append(level)
        self._frames += 1
        if self._frames % 10 == 1:
            self._floor = float(np.percentile(np.fromiter(self._levels, dtype=np.float32), 10))
        if level < max(self._min_dbfs, self._floor + self._margin_db):
            return False
        return bool(self._vad.is_speech(pcm.tobytes(), SAMPLE_RATE))

    def push(self, pcm: Pcm, t: float) -> list[VadEvent]:
        """Add one 10 ms frame captured at ``t`` and return the events it caused."""
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


class _Window:
    """The last ``ms`` (plus slack) of speech decisions with their times."""

    def __init__(self, ms: int) -> None:
        self._need = max(1, ms // FRAME_MS)
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
        return first - FRAME_MS / 1000
