"""How much speech a stream of audio holds: the fake STT's ear, shared by the echo worker and the tests.

Audio is judged in 20 ms windows: a window is audible when its RMS exceeds ``AUDIBLE_RMS``. An utterance starts at
an audible window and ends after ``END_SILENCE_S`` of quiet; its span runs from its first to its last audible
window. Only numpy: the echo worker (in ``.venv-agents``) and the test process (in ``.venv``) both import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

WINDOW_S = 0.02
AUDIBLE_RMS = 300.0
END_SILENCE_S = 0.8
INTERIM_EVERY_S = 0.5


@dataclass
class Utterance:
    """One stretch of speech: from its first to its last audible window, and how much of it was audible."""

    span_s: float = 0.0
    audible_s: float = 0.0


@dataclass
class SpeechMeter:
    """Cuts audio into utterances as it arrives (one meter per stream, any sample rate)."""

    utterances: list[Utterance] = field(default_factory=list)
    current: Utterance | None = None
    _quiet_s: float = 0.0
    _last_interim_s: float = 0.0
    _pending: npt.NDArray[np.int16] = field(default_factory=lambda: np.zeros(0, np.int16))

    def feed(self, samples: npt.NDArray[np.int16], rate: int) -> list[tuple[str, float]]:
        """Take mono ``samples`` at ``rate``; return what happened: ``("start" | "interim" | "final", span_s)``."""
        happened: list[tuple[str, float]] = []
        self._pending = np.concatenate([self._pending, samples])
        step = max(1, int(rate * WINDOW_S))
        while len(self._pending) >= step:
            window, self._pending = self._pending[:step], self._pending[step:]
            loud = float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) > AUDIBLE_RMS
            happened.extend(self._window(loud))
        return happened

    def finish(self) -> list[tuple[str, float]]:
        """End the stream: an utterance still open is final."""
        return self._close() if self.current is not None else []

    def _window(self, loud: bool) -> list[tuple[str, float]]:
        happened: list[tuple[str, float]] = []
        if self.current is None:
            if not loud:
                return happened
            self.current, self._quiet_s, self._last_interim_s = Utterance(), 0.0, 0.0
            happened.append(("start", 0.0))
        utterance = self.current
        if loud:
            utterance.span_s += self._quiet_s + WINDOW_S
            utterance.audible_s += WINDOW_S
            self._quiet_s = 0.0
        else:
            self._quiet_s += WINDOW_S
        if utterance.span_s - self._last_interim_s >= INTERIM_EVERY_S:
            self._last_interim_s = utterance.span_s
            happened.append(("interim", utterance.span_s))
        if self._quiet_s >= END_SILENCE_S:
            happened.extend(self._close())
        return happened

    def _close(self) -> list[tuple[str, float]]:
        assert self.current is not None
        done, self.current = self.current, None
        self.utterances.append(done)
        return [("final", done.span_s)]

    @property
    def speech_s(self) -> float:
        """The spans of all utterances so far, added up."""
        return sum(u.span_s for u in self.utterances) + (self.current.span_s if self.current else 0.0)


def measure(samples: npt.NDArray[np.int16], rate: int) -> SpeechMeter:
    """The meter after a whole recording."""
    meter = SpeechMeter()
    meter.feed(samples, rate)
    meter.finish()
    return meter
