"""When a live session ends by itself: silence, its maximum duration, the wake guard, or an outage that lasts.

:meth:`LiveClock.due` is asked with the time; it reads the agent's state (the session snapshot's), when the agent
last did what (:class:`~kiosk.daemon.agent_presence.AgentActivity`) and the visitor's last speech, and returns the end
that is due, if any; :meth:`LiveClock.wait_for_end` asks it at each deadline. Time the room spent reconnecting
(:class:`Outages`) is left out of the silence and maximum-duration clocks, and while the room reconnects only the
outage's own bound
(``session.network_lost_s``) applies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from kiosk import session as sm
from kiosk.config import SessionConfig
from kiosk.daemon.agent_presence import AgentActivity
from kiosk.daemon.linkdown import Outages
from kiosk.errors import KioskError
from kiosk.reasons import FailureReason
from kiosk.wakeguard import TalkoverJudge

log = logging.getLogger(__name__)
_BUSY = frozenset({sm.AgentState.THINKING, sm.AgentState.SPEAKING})
#: The wake guard's judge integrates who speaks when: it is asked this often (s) in a voice-woken session.
JUDGE_TICK_S = 0.1
#: The longest :meth:`LiveClock.next_check` looks ahead (s): a bound on how late an end no deadline foresaw comes.
MAX_CHECK_S = 1.0
#: The shortest wait between two looks at the clocks (s): a deadline met to the last float bit is not missed by a
#: busy loop.
MIN_WAIT_S = 0.001


class SpeechTimes(Protocol):
    """What the clock reads of the audio engine."""

    @property
    def last_speech_t(self) -> float | None:
        """Monotonic time of the visitor's last speech."""


class LiveClock:
    """The clocks of live session ``number``, from the moment the agent joined (``agent_at``)."""

    def __init__(
        self,
        *,
        number: int,
        config: SessionConfig,
        agent: AgentActivity,
        agent_state: Callable[[], sm.AgentState],
        audio: SpeechTimes,
        live_at: float,
        agent_at: float,
        outages: Outages,
        woke: bool,
        clock: Callable[[], float],
    ) -> None:
        self._number = number
        self._now = clock
        self._config = config
        self._agent = agent
        self._agent_state = agent_state
        self._audio = audio
        self._live_at = live_at
        self._agent_at = agent_at
        self._outages = outages
        self._limit = config.wake_max_duration_s if woke else config.max_duration_s
        #: Judges a voice-woken session from the agent's joining on (see kiosk.wakeguard); None for a press.
        self.judge = TalkoverJudge(config=config, agent_joined_at=agent_at) if woke else None
        #: How late the silence end came after its timeout (s), once it did.
        self.silence_lateness: float | None = None

    def due(self, now: float) -> sm.Event | None:
        """The end that is due at ``now`` (Silence, MaxDuration, WakeGuardEnd, Failure network_lost), or None."""
        if (down := self._outages.down_since) is not None:
            if now - down >= self._config.network_lost_s:
                log.warning(
                    "session %d: the room has been reconnecting for %.0f s (session.network_lost_s)",
                    self._number,
                    now - down,
                )
                return sm.Failure(FailureReason.NETWORK_LOST)
            return None
        if now - self._live_at - self._outages.paused(self._live_at, now) >= self._limit:
            return sm.MaxDuration()
        if self.judge is not None:
            speaking = self._agent_state() == sm.AgentState.SPEAKING
            why = self.judge.tick(now, speaking, self._agent.last_audio, self._audio.last_speech_t)
            if why is not None:
                log.info("session %d: wake guard: %s", self._number, why)
                return sm.WakeGuardEnd()
        last = self.last_activity(now)
        quiet = now - last - self._outages.paused(last, now)
        if quiet >= self._config.silence_timeout_s:
            self.silence_lateness = round(quiet - self._config.silence_timeout_s, 3)
            return sm.Silence()
        return None

    async def wait_for_end(self, uplink: asyncio.Task[None], moved: asyncio.Event) -> sm.Event:
        """Return the end that comes due, or a Failure if the microphone ``uplink`` task ended.

        Sleeps until the next deadline (:meth:`next_check`), the uplink ending, or ``moved`` (the link going down or
        coming back, which moves the deadlines), whichever comes first.
        """
        while True:
            if uplink.done():
                error = uplink.exception() if not uplink.cancelled() else None
                log.error("session %d: the microphone uplink stopped: %s", self._number, error)
                return sm.Failure(error.reason if isinstance(error, KioskError) else FailureReason.CONNECT_FAILED)
            now = self._now()
            if (end := self.due(now)) is not None:
                return end
            moved.clear()
            waiting = asyncio.ensure_future(moved.wait())
            try:
                await asyncio.wait({uplink, waiting}, timeout=max(MIN_WAIT_S, self.next_check(now) - now))
            finally:
                waiting.cancel()

    def next_check(self, now: float) -> float:
        """When to call :meth:`due` next (monotonic s): the earliest deadline among the outage bound, the maximum
        duration, the silence timeout and the moment an agent's busy claim stops being credible; at most
        ``MAX_CHECK_S`` ahead, and ``JUDGE_TICK_S`` while the wake guard judges the room."""
        cap = now + (JUDGE_TICK_S if self.judge is not None else MAX_CHECK_S)
        config, outages = self._config, self._outages
        if (down := outages.down_since) is not None:
            return min(cap, down + config.network_lost_s)
        last = self.last_activity(now)
        deadlines = [
            self._live_at + self._limit + outages.paused(self._live_at, now),
            last + config.silence_timeout_s + outages.paused(last, now),
        ]
        agent = self._agent
        if self._agent_state() in _BUSY:
            sign_of_life = max(agent.state_at, agent.last_audio)
            incredible_at = sign_of_life + config.agent_stuck_s + outages.paused(sign_of_life, now)
            if incredible_at > now:  # past it, the claim no longer counts and the silence deadline says all
                deadlines.append(incredible_at)
        return min(cap, *deadlines)

    def last_activity(self, now: float) -> float:
        """When anyone last spoke: the visitor's speech, the agent's audio, or the agent thinking/speaking.

        The agent's claim to be thinking or speaking counts as activity only while it is credible: for
        ``session.agent_stuck_s`` after the claim began or the agent's audio was last heard. An agent stuck in
        "speaking" or "thinking" with no audio (livekit/agents#3427) then counts as silent from its last sign of life.
        """
        agent = self._agent
        # The silence clock starts when the agent is there to talk to, not when the room connected.
        candidates = [self._agent_at, agent.last_audio, agent.last_busy]
        if self._audio.last_speech_t is not None:
            candidates.append(self._audio.last_speech_t)
        if self._agent_state() in _BUSY:
            sign_of_life = max(agent.state_at, agent.last_audio)
            claimed = now - sign_of_life - self._outages.paused(sign_of_life, now)
            candidates.append(now if claimed < self._config.agent_stuck_s else sign_of_life)
        return max(candidates)
