"""Turn latency as the visitor feels it: from the end of their speech to the agent's first sound at the speaker.

The end of speech is the kiosk's own voice activity detector's (:attr:`kiosk.audio.vad.VoiceActivity.last_speech_t`,
the capture time of the last voiced frame of a segment, read when the segment's offset is decided). The agent's first
sound is the first chunk of the ``agent`` mixer input whose peak reaches :data:`AUDIBLE_PEAK`, dated at the speaker:
the time it was mixed plus the audio already queued ahead of it and the output device's latency
(:meth:`kiosk.audio.playback.Playback.ahead_s`). Both are on the engine's clock (monotonic s).

The answer is the agent's first utterance that begins after the end of speech (an utterance begins after
:data:`UTTERANCE_GAP_S` of the agent's quiet): sound that began before, and goes on while the visitor stops, is not
an answer to them. The end of speech is known only once the detector's hang-over has passed, and by then the answer
may already be mixed: its sound at the speaker is then in the future, after the end of speech, and the turn is timed
at once. Only armed turns count: the daemon arms the timer while a session is live, and the agent's first utterance of
the session is its greeting, never an answer (a visitor who speaks from the press hears it right after their first
words). The visitor speaking again before the answer makes the turn longer; an answer later than
:data:`TURN_MAX_S` is not counted.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kiosk.audio.frames import SAMPLE_RATE

log = logging.getLogger(__name__)
Pcm = npt.NDArray[np.int16]

#: A mixer chunk of the agent with a sample beyond this peak is its voice (about -50 dBFS; decoded silence and
#: comfort noise stay far below).
AUDIBLE_PEAK = 100
#: An agent that has not answered within this long (s) of the end of speech did not answer that turn.
TURN_MAX_S = 15.0
#: A pause of the agent's sound this long (s) ends its utterance: the next sound begins a new one (an answer).
UTTERANCE_GAP_S = 0.3
#: Turns kept for the session's figures in ``kiosk status``.
KEPT_TURNS = 200


@dataclass(frozen=True, slots=True)
class Turn:
    """One measured turn: ``latency_s`` from ``speech_end`` (engine clock, s) to the agent's sound at the speaker."""

    speech_end: float
    latency_s: float


class TurnTimer:
    """Measures each armed turn; call its hooks on the event loop.

    ``speaker_delay()`` returns the seconds between a chunk mixed now and its sound at the speaker (0 when no output
    stream runs); ``clock`` is the engine's (monotonic s).
    """

    def __init__(self, *, clock: Callable[[], float], speaker_delay: Callable[[], float]) -> None:
        self._clock = clock
        self._speaker_delay = speaker_delay
        self._subscribers: list[Callable[[Turn], None]] = []
        self._armed = False
        self._pending: float | None = None
        # At the speaker (engine clock, s): when the agent's current utterance began, and its last sound so far.
        self._utterance_at: float | None = None
        self._utterances = 0
        self._agent_sound_at: float | None = None
        #: The turns of the session armed last (the current one while armed), oldest first.
        self.turns: list[Turn] = []

    def arm(self) -> None:
        """Start measuring (a session went live); the turns of the previous session are forgotten."""
        if not self._armed:
            self._armed = True
            self.turns = []
            self._pending = None
            self._utterance_at = self._agent_sound_at = None
            self._utterances = 0

    def disarm(self) -> None:
        """Stop measuring; a turn still waiting for its answer is dropped."""
        self._armed = False
        self._pending = None

    def subscribe(self, callback: Callable[[Turn], None]) -> Callable[[], None]:
        """Call ``callback`` with every measured turn; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def speech_ended(self, speech_end: float) -> None:
        """The visitor's speech segment ended; ``speech_end`` is its last voiced frame's capture time."""
        if not self._armed:
            return
        began = self._utterance_at
        if began is not None and began > speech_end and self._utterances > 1:
            self._pending = None
            self._timed(speech_end, began)  # the answer was mixed during the detector's hang-over
        else:
            self._pending = speech_end

    def speech_began(self) -> None:
        """The visitor speaks again before the agent answered: the turn is not over yet."""
        self._pending = None

    def agent_audio(self, pcm: Pcm) -> None:
        """Mixer hook: a chunk of the agent's audio (48 kHz mono) was just mixed for the speaker."""
        if not self._armed:
            return
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) >= AUDIBLE_PEAK)
        if len(loud) == 0:
            return
        mixed_at = self._clock() + self._speaker_delay()
        at_speaker = mixed_at + int(loud[0]) / SAMPLE_RATE
        begins = self._agent_sound_at is None or at_speaker - self._agent_sound_at > UTTERANCE_GAP_S
        self._agent_sound_at = mixed_at + int(loud[-1]) / SAMPLE_RATE
        if not begins:
            return
        self._utterance_at = at_speaker
        self._utterances += 1
        pending, self._pending = self._pending, None
        if pending is not None and self._utterances > 1:  # the first utterance is the greeting
            self._timed(pending, at_speaker)

    def _timed(self, speech_end: float, answered_at: float) -> None:
        latency = answered_at - speech_end
        if not 0 <= latency <= TURN_MAX_S:
            return
        turn = Turn(speech_end=speech_end, latency_s=latency)
        self.turns = [*self.turns[-(KEPT_TURNS - 1) :], turn]
        log.debug("turn latency %.0f ms", latency * 1000)
        for callback in list(self._subscribers):
            try:
                callback(turn)
            except Exception:
                log.exception("a turn latency subscriber failed")

    def status(self) -> dict[str, float | int | None]:
        """The session's turns for ``kiosk status``: how many, the last and the median latency (ms)."""
        latencies = [t.latency_s * 1000 for t in self.turns]
        return {
            "turns": len(latencies),
            "last_ms": round(latencies[-1]) if latencies else None,
            "p50_ms": round(statistics.median(latencies)) if latencies else None,
        }
