"""The wake guard: voice wake that a radio talking in the lobby cannot hold open.

An agent answers a radio as readily as a visitor, so "the agent replied" proves nothing. What a radio does not do is
*listen*: it goes on talking while the agent speaks, where a visitor falls quiet to hear the answer. Two pure parts
(every time is passed in, in ``time.monotonic()`` seconds, so tests advance a clock instead of sleeping):

:class:`WakeGate` decides whether a voice wake may start a session. It refuses a wake

* quieter than ``trigger.wake_min_dbfs`` (speech across the lobby, not at the kiosk),
* beyond ``trigger.wake_max_per_hour`` admitted wakes in the last hour,
* during the rest that follows a voice-woken session the guard (or the wake maximum) ended: ``trigger.wake_backoff_s``,
  doubled after each such session in a row, at most ``trigger.wake_backoff_max_s``. A voice-woken session that
  someone listened to, or any session started by a press, resets the back-off.

:class:`TalkoverJudge` watches one voice-woken session, tick by tick. Each turn of the agent is judged on its first
``TURN_EVIDENCE_S`` of agent speech: *talked over* when the room spoke through at least ``TALKED_OVER_SHARE`` of
it, *listened to* when the room spoke through at most ``LISTENED_SHARE`` of it, undecided in between. The session
ends when ``session.wake_talkover_turns`` turns in a row were talked over, or when no turn was listened to within
``session.wake_confirm_s`` of the agent joining (an agent that never speaks cannot be listened to either).
``session.wake_max_duration_s`` bounds what is left.

Worst case with the defaults, for a radio that never listens: one session per back-off, each ending at the latest
``wake_confirm_s`` (12 s) after the agent joined; the first rest is 300 s, so five minutes of radio hold the kiosk
in session for one such session (well under 10 %), and an hour for at most ``wake_max_per_hour`` of them.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections import Counter, deque
from typing import Any

from kiosk.config import SessionConfig, TriggerConfig
from kiosk.reasons import EndReason

log = logging.getLogger(__name__)

HOUR_S = 3600.0
#: Seconds of agent speech a turn is judged on.
TURN_EVIDENCE_S = 2.0
#: Share of those seconds the room must speak through for the turn to count as talked over.
TALKED_OVER_SHARE = 0.4
#: At most this share of room speech and the turn counts as listened to.
LISTENED_SHARE = 0.2
#: Agent silence that ends a turn (pauses between its sentences do not).
TURN_GAP_S = 0.8
#: Agent audio or room speech this recent counts as "speaking now".
SPEAKING_NOW_S = 0.3
#: Longer gaps between two observations are not counted (a stalled loop must not judge on made-up time).
MAX_TICK_S = 0.5


class Refusal(enum.StrEnum):
    """Why the gate refused a voice wake."""

    TOO_QUIET = "too_quiet"
    BACKOFF = "backoff"
    HOURLY_CAP = "hourly_cap"


class WakeGate:
    """Admits or refuses voice wakes; told how each session ended, it rests after sessions nobody listened to."""

    def __init__(self, *, config: TriggerConfig) -> None:
        self.config = config
        self._admitted: deque[float] = deque()
        self._strikes = 0
        self._rest_until = float("-inf")
        self.refusals: Counter[Refusal] = Counter()
        self.admitted = 0

    def admit(self, now: float, *, level_dbfs: float) -> Refusal | None:
        """Record and allow a wake at ``now`` whose speech was ``level_dbfs`` loud; else say why not."""
        refusal = self._check(now, level_dbfs)
        if refusal is not None:
            self.refusals[refusal] += 1
            return refusal
        self._admitted.append(now)
        self.admitted += 1
        return None

    def _check(self, now: float, level_dbfs: float) -> Refusal | None:
        if level_dbfs < self.config.wake_min_dbfs:
            return Refusal.TOO_QUIET
        if now < self._rest_until:
            return Refusal.BACKOFF
        while self._admitted and self._admitted[0] <= now - HOUR_S:
            self._admitted.popleft()
        if len(self._admitted) >= self.config.wake_max_per_hour:
            return Refusal.HOURLY_CAP
        return None

    def session_ended(self, now: float, *, woke: bool, reason: str | None, listened: bool) -> float:
        """Learn how a session ended; returns the rest (seconds) now imposed on voice wake, 0 for none."""
        if not woke:
            # Someone pressed: a person is at the kiosk, whatever the radio did before.
            self._strikes = 0
            self._rest_until = float("-inf")
            return 0.0
        if reason in {EndReason.WAKE_GUARD, EndReason.MAX_DURATION}:
            self._strikes += 1
            rest = min(self.config.wake_backoff_s * float(2 ** (self._strikes - 1)), self.config.wake_backoff_max_s)
            self._rest_until = now + rest
            return rest
        if listened:
            self._strikes = 0
        return 0.0

    def status(self, now: float) -> dict[str, Any]:
        """The gate's part of ``kiosk status``: rest left, strikes, wakes in the last hour, refusals."""
        recent = sum(1 for t in self._admitted if t > now - HOUR_S)
        return {
            "resting_s": round(max(0.0, self._rest_until - now), 1),
            "strikes": self._strikes,
            "wakes_last_hour": recent,
            "max_per_hour": self.config.wake_max_per_hour,
            "refusals": {str(k): v for k, v in self.refusals.items()},
        }


@dataclasses.dataclass
class _Turn:
    agent_s: float = 0.0
    overlap_s: float = 0.0
    last_agent_t: float = 0.0
    judged: bool = False


class TalkoverJudge:
    """Decides, from who speaks when, whether anyone in the room listens to the agent of a voice-woken session."""

    def __init__(self, *, config: SessionConfig, agent_joined_at: float) -> None:
        self._confirm_by = agent_joined_at + config.wake_confirm_s
        self._turns_to_end = config.wake_talkover_turns
        self._last_t: float | None = None
        self._turn: _Turn | None = None
        self.listened = False
        self.talked_over_in_row = 0
        self.turns_judged = 0

    def tick(
        self, now: float, agent_says_speaking: bool, last_agent_audio: float, last_speech: float | None
    ) -> str | None:
        """:meth:`observe` from the session's clocks: the agent's state, its last audible audio, the room's speech."""
        agent = agent_says_speaking or now - last_agent_audio < SPEAKING_NOW_S
        room = last_speech is not None and now - last_speech < SPEAKING_NOW_S
        return self.observe(now, agent_speaking=agent, room_speaking=room)

    def observe(self, now: float, *, agent_speaking: bool, room_speaking: bool) -> str | None:
        """Add the interval since the last call; return why the session should end, or None to go on."""
        dt = 0.0 if self._last_t is None else min(max(0.0, now - self._last_t), MAX_TICK_S)
        self._last_t = now
        turn = self._turn
        if agent_speaking:
            if turn is None or now - turn.last_agent_t > TURN_GAP_S:
                turn = self._turn = _Turn(last_agent_t=now)
            else:
                turn.agent_s += dt
                turn.overlap_s += dt if room_speaking else 0.0
                turn.last_agent_t = now
            if not turn.judged and turn.agent_s >= TURN_EVIDENCE_S:
                self._judge(turn)
        if self.talked_over_in_row >= self._turns_to_end:
            return f"the room talked over {self.talked_over_in_row} of the agent's turns in a row"
        if not self.listened and now >= self._confirm_by and not self._judging(now):
            return "nobody listened to the agent since it joined"
        return None

    def _judge(self, turn: _Turn) -> None:
        turn.judged = True
        self.turns_judged += 1
        share = turn.overlap_s / turn.agent_s
        if share >= TALKED_OVER_SHARE:
            self.talked_over_in_row += 1
        elif share <= LISTENED_SHARE:
            self.listened = True
            self.talked_over_in_row = 0
        log.debug("agent turn judged: room spoke through %.0f %% of it", share * 100)

    def _judging(self, now: float) -> bool:
        """A turn under way and not yet judged: let it finish its evidence before the deadline applies."""
        turn = self._turn
        return turn is not None and not turn.judged and now - turn.last_agent_t <= TURN_GAP_S
