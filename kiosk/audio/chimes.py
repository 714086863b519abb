"""Short synthesized chimes for connected, ended and error, and the tones of the volume and mute buttons."""

from __future__ import annotations

import enum

import numpy as np

from kiosk.audio.frames import SAMPLE_RATE, Pcm


class Chime(enum.StrEnum):
    """Which chime to play."""

    CONNECTED = "connected"
    ENDED = "ended"
    ERROR = "error"
    VOLUME = "volume"
    MUTED = "muted"
    UNMUTED = "unmuted"


#: (frequency Hz, duration s) notes of each chime.
NOTES: dict[Chime, tuple[tuple[float, float], ...]] = {
    Chime.CONNECTED: ((660.0, 0.12), (880.0, 0.18)),
    Chime.ENDED: ((880.0, 0.12), (660.0, 0.18)),
    Chime.ERROR: ((330.0, 0.15), (330.0, 0.15), (262.0, 0.25)),
    Chime.VOLUME: ((990.0, 0.08),),
    Chime.MUTED: ((523.0, 0.1), (392.0, 0.1), (262.0, 0.16)),
    Chime.UNMUTED: ((262.0, 0.1), (392.0, 0.1), (523.0, 0.16)),
}


def _note(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(4 * np.pi * freq * t)
    # A fast attack and exponential decay sound like a bell and start and end without clicks.
    envelope = np.minimum(1.0, t / 0.005) * np.exp(-t * 6.0) * np.minimum(1.0, (seconds - t) / 0.01)
    result: np.ndarray = tone * envelope / 1.3
    return result


def render(chime: Chime, level: float = 0.5) -> Pcm:
    """The chime as 48 kHz mono int16 at ``level`` of full scale."""
    notes = [_note(freq, seconds) for freq, seconds in NOTES[chime]]
    gap = np.zeros(int(0.03 * SAMPLE_RATE))
    wave = np.concatenate([part for note in notes for part in (note, gap)])
    return np.round(wave * level * 32767).astype(np.int16)


def duration_s(chime: Chime) -> float:
    """How long the chime lasts."""
    return sum(seconds + 0.03 for _, seconds in NOTES[chime])
