"""How a session went: its summary, and naming a failed room connect."""

from __future__ import annotations

import dataclasses

from livekit import rtc

from kiosk.broker import ConnectionDetails, ServerClock
from kiosk.broker.clock import TIME_SYNC_HINT
from kiosk.reasons import FailureReason


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
