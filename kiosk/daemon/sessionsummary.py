"""How a session went: when things happened, its summary, and naming a failed room connect."""

from __future__ import annotations

import dataclasses

from livekit import rtc

from kiosk.broker import ConnectionDetails, ServerClock
from kiosk.broker.clock import TIME_SYNC_HINT
from kiosk.daemon.lifecycle import PHASE_TIMEOUT, Phase
from kiosk.errors import KioskError
from kiosk.reasons import FailureReason


@dataclasses.dataclass
class SessionTimes:
    """When the steps of one session happened: monotonic seconds, None while a step has not happened."""

    #: The press (or the speech that woke the kiosk).
    pressed_at: float
    #: The room connected: the session went live.
    live_at: float | None = None
    #: The agent joined the room.
    agent_at: float | None = None
    #: The session's close began.
    ended_at: float | None = None

    def press_to_live_ms(self) -> float | None:
        """Milliseconds from the press to live, once live."""
        return round((self.live_at - self.pressed_at) * 1000, 1) if self.live_at is not None else None

    def duration_s(self, now: float) -> float:
        """Seconds from live (or from the press, before live) to the end, or to ``now`` before it."""
        return (self.ended_at or now) - (self.live_at or self.pressed_at)

    def agent_join_s(self) -> float | None:
        """Seconds from live to the agent joining; None if it never joined."""
        if self.agent_at is None or self.live_at is None:
            return None
        return round(self.agent_at - self.live_at, 3)


@dataclasses.dataclass
class SessionSummary:
    """What one session did, for ``kiosk demo`` and the benchmarks."""

    number: int
    room: str | None
    press_to_live_ms: float | None
    duration_s: float
    end_reason: str | None
    preconnect_s: float
    transcript: list[tuple[str, str]]
    #: For a silence end: how late it came, past the last activity plus the timeout (seconds).
    silence_lateness_s: float | None = None
    #: Seconds from live (room connected) to the agent joining; None if it never joined.
    agent_join_s: float | None = None
    #: What started it: button, control, keyboard or voice.
    trigger: str | None = None
    #: The failure reason (``kiosk.reasons.FailureReason``) when it ended by a failure.
    failure: str | None = None

    @property
    def failed(self) -> bool:
        """True when the session never went live or ended by a failure."""
        return self.press_to_live_ms is None or self.failure is not None


def failure_for(
    exc: KioskError | rtc.ConnectError | TimeoutError,
    phase: Phase,
    grant: ConnectionDetails | None,
    clock: ServerClock,
) -> tuple[FailureReason, str]:
    """The failure a session step's exception means, and a sentence for the log: a :class:`KioskError` names its
    own reason, a failed room connect is named by :func:`connect_failure`, a timeout by the ``phase`` it ended."""
    if isinstance(exc, KioskError):
        return exc.reason, str(exc)
    if isinstance(exc, rtc.ConnectError):
        return connect_failure(exc, grant, clock)
    return PHASE_TIMEOUT.get(phase, FailureReason.INTERNAL), f"timed out while {phase}"


def connect_failure(
    exc: rtc.ConnectError, grant: ConnectionDetails | None, clock: ServerClock
) -> tuple[FailureReason, str]:
    """Name a failed room connect: ``clock`` when the server refused the token and a clock disagrees.

    The kiosk never refuses a token on its own clock; when the server refuses it (401) and the local clock is off the
    broker's ``Date`` by more than a minute, or the token already looked unusable locally, the clock is to blame.
    """
    refused = "401" in str(exc) or "unauthorized" in str(exc).lower()
    if refused and (clock.wrong or (grant is not None and grant.local_clock_problem)):
        details = []
        if clock.skew_s is not None and clock.wrong:
            details.append(f"the local clock is {clock.describe()} the broker's by {abs(clock.skew_s):.0f} s")
        if grant is not None and grant.local_clock_problem:
            details.append(grant.local_clock_problem)
        return FailureReason.CLOCK, f"the LiveKit server refused the token ({'; '.join(details)}): {TIME_SYNC_HINT}"
    return FailureReason.CONNECT_FAILED, f"room connect failed: {exc}"
