"""A microphone level meter over the daemon's 10 ms frames: level, peak, clipping, noise floor, voice activity.

Levels are dBFS (0 is full scale); the noise floor and speech decisions come from the daemon's own
:class:`~kiosk.audio.vad.VoiceActivity`, so "speech" here is what would wake the kiosk's voice activity detector.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kiosk.audio.frames import FRAME_MS, Pcm, dbfs
from kiosk.audio.vad import VoiceActivity

#: A sample this close to full scale counts as clipped (resampling rounds a clipped peak a little).
CLIP_LEVEL = 32000
#: One meter reading covers this many 10 ms frames (100 ms).
TICK_FRAMES = 10
BAR_WIDTH = 40
BAR_FLOOR_DBFS = -80.0
#: Speech quieter than this (loudest 100 ms of it) is hard for the echo canceller and the agent to hear.
QUIET_SPEECH_DBFS = -35.0


@dataclasses.dataclass(frozen=True)
class Reading:
    """One 100 ms meter reading: seconds since the start, RMS and peak in dBFS, the floor, speech, clipping."""

    t: float
    level_dbfs: float
    peak_dbfs: float
    floor_dbfs: float
    speech: bool
    clipped: int

    def line(self) -> str:
        """The terminal line: a bar (``#`` level, ``|`` peak) and the figures."""

        def col(value: float) -> int:
            share = (max(BAR_FLOOR_DBFS, min(0.0, value)) - BAR_FLOOR_DBFS) / -BAR_FLOOR_DBFS
            return round(share * BAR_WIDTH)

        cells = ["#" if i < col(self.level_dbfs) else "." for i in range(BAR_WIDTH)]
        cells[min(BAR_WIDTH - 1, col(self.peak_dbfs))] = "|"
        flags = ("SPEECH" if self.speech else "      ") + ("  CLIP" if self.clipped else "")
        return (
            f"{self.t:5.1f} s [{''.join(cells)}] level {self.level_dbfs:6.1f} dBFS  peak {self.peak_dbfs:6.1f}"
            f"  floor {self.floor_dbfs:6.1f}  {flags}"
        ).rstrip()


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a listen found: figures in dBFS and seconds, and a verdict in words."""

    device: str
    seconds: float
    peak_dbfs: float
    loudest_dbfs: float
    floor_dbfs: float
    speech_s: float
    clipped_samples: int
    verdict: str
    ok: bool


class LevelMeter:
    """Feed it every 10 ms frame (48 kHz mono int16); it returns a :class:`Reading` every 100 ms.

    Speech and the noise floor are read from ``vad``, which must be fed the same frames by its owner.
    """

    def __init__(self, *, vad: VoiceActivity) -> None:
        #: The voice activity detector that sees the same frames (the audio engine's own); read, never fed here.
        self.vad = vad
        self._frames: list[Pcm] = []
        self._count = 0
        self._speech_frames = 0
        self.peak = 0
        self.clipped = 0
        self.loudest_dbfs = -120.0
        self.speech_loudest_dbfs = -120.0

    def push(self, pcm: Pcm, t: float) -> Reading | None:
        """Add one frame captured at ``t``; a reading when 100 ms are complete."""
        self._count += 1
        if self.vad.speaking:
            self._speech_frames += 1
        self._frames.append(pcm)
        if len(self._frames) < TICK_FRAMES:
            return None
        block = np.concatenate(self._frames)
        self._frames = []
        peak = int(np.max(np.abs(block.astype(np.int32))))
        clipped = int(np.count_nonzero(np.abs(block.astype(np.int32)) >= CLIP_LEVEL))
        level = dbfs(block)
        self.peak = max(self.peak, peak)
        self.clipped += clipped
        self.loudest_dbfs = max(self.loudest_dbfs, level)
        if self.vad.speaking:
            self.speech_loudest_dbfs = max(self.speech_loudest_dbfs, level)
        return Reading(
            t=self._count * FRAME_MS / 1000,
            level_dbfs=round(level, 1),
            peak_dbfs=round(_peak_dbfs(peak), 1),
            floor_dbfs=round(self.vad.noise_floor_dbfs, 1),
            speech=self.vad.speaking,
            clipped=clipped,
        )

    @property
    def speech_s(self) -> float:
        """Seconds of the listen inside speech segments."""
        return self._speech_frames * FRAME_MS / 1000

    def summary(self, device: str) -> Summary:
        """The figures so far and what they mean for an installer."""
        floor = round(self.vad.noise_floor_dbfs, 1)
        ok = False
        if self._count == 0:
            verdict = "no audio arrived from the device: is it the right input? (kiosk devices)"
        elif self.clipped:
            verdict = (
                f"clipping: {self.clipped} samples at full scale; lower the capture gain "
                "(alsamixer, F4 for capture) until speech peaks below -3 dBFS"
            )
        elif self.speech_s == 0 and self.loudest_dbfs < -60:
            verdict = (
                "nearly silent: is this the microphone? Try `kiosk test mic --scan`, or raise its capture gain "
                "(alsamixer, F4)"
            )
        elif self.speech_s == 0:
            verdict = "no speech heard: speak towards the kiosk from where a visitor stands"
        elif self.speech_loudest_dbfs < QUIET_SPEECH_DBFS:
            verdict = (
                f"speech heard but quiet (loudest {self.speech_loudest_dbfs:.1f} dBFS): raise the capture gain "
                "(alsamixer, F4) or move the microphone closer"
            )
        else:
            ok = True
            verdict = (
                f"good: {self.speech_s:.1f} s of speech, loudest {self.speech_loudest_dbfs:.1f} dBFS, "
                f"{self.speech_loudest_dbfs - floor:.0f} dB above the noise floor"
            )
        return Summary(
            device=device,
            seconds=round(self._count * FRAME_MS / 1000, 2),
            peak_dbfs=round(_peak_dbfs(self.peak), 1),
            loudest_dbfs=round(self.loudest_dbfs, 1),
            floor_dbfs=floor,
            speech_s=round(self.speech_s, 2),
            clipped_samples=self.clipped,
            verdict=verdict,
            ok=ok,
        )


def _peak_dbfs(peak: int) -> float:
    return -120.0 if peak <= 0 else 20.0 * float(np.log10(peak / 32768.0))
