"""Keeping a device direction alive: failure bookkeeping and jittered exponential backoff.

Why this backoff is not stamina's (which the broker's HTTP retries use): stamina wraps one operation in a loop that
sleeps between attempts. A device reopen is not such a loop. The supervisor's single tick checks both directions for
stalls, deafness and due reopens, so each direction only keeps *when* its next attempt is due
(:meth:`Direction.schedule_retry`). The delay depends on what the last failure was (a device that is only absent is
looked for every ``poll_s``; one whose PortAudio call hung waits the full maximum, see :mod:`kiosk.audio.worker`),
after a few attempts the supervisor rescans the devices between them, and the count starts again with each new
failure and each reopen. The curve starts as stamina's does (0.1 s, doubling, capped at
``audio.reopen_backoff_max_s``), with jitter as a share of the delay (50-100 %) instead of stamina's added second,
which would swamp the first, short delays.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

#: First reopen delay; doubled per failed attempt up to ``audio.reopen_backoff_max_s``.
BACKOFF_BASE_S = 0.1
#: How long a newly opened stream may take for its first block before it counts as stalled.
FIRST_BLOCK_GRACE_S = 3.0


class Stream(Protocol):
    """What the supervisor needs of a capture or playback."""

    last_block_t: float | None

    def stop(self) -> None:
        """Loop side: stop the stream's loop tasks."""
        ...

    def close(self) -> None:
        """Close the underlying stream (blocking)."""
        ...


def backoff_delay(attempt: int, *, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """Delay before reopen ``attempt`` (0-based): exponential, capped, with up to half of it random."""
    delay = min(max_s, BACKOFF_BASE_S * 2.0**attempt)
    return delay * (0.5 + 0.5 * rng())


@dataclass
class Direction:
    """The state of one direction: its live stream, or when to try opening it again."""

    name: str
    stream: Stream | None = None
    opened_t: float = 0.0
    failed: str | None = None
    attempts: int = 0
    next_attempt_t: float = 0.0
    failures: int = 0
    reopens: int = 0
    last_error: str | None = None
    #: PortAudio calls on this direction that hung and were abandoned (see kiosk.audio.worker).
    hung: int = 0
    device: str | None = None
    samplerate: int | None = None
    channels: int | None = None
    latency_s: float | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def stalled(self, now: float, timeout_s: float) -> bool:
        """True when the stream has delivered nothing for ``timeout_s`` (``FIRST_BLOCK_GRACE_S`` at least after opening).

        A fresh stream may take longer for its first block than a running one between blocks (a sound server under
        load, USB audio waking up); judging it by the running timeout would close and reopen it before it ever ran.
        """
        if self.stream is None:
            return False
        last = self.stream.last_block_t
        if last is None or last < self.opened_t:
            return now - self.opened_t > max(timeout_s, FIRST_BLOCK_GRACE_S)
        return now - last > timeout_s

    def schedule_retry(
        self, now: float, *, max_s: float, rng: Callable[[], float], poll_s: float | None = None
    ) -> float:
        """Plan the next reopen attempt and return its delay: the backoff, at most ``poll_s`` when given (a device
        that is only absent costs nothing to look for), and the full ``max_s`` after a hung call."""
        delay = backoff_delay(self.attempts, max_s=max_s, rng=rng)
        if self.hung:
            delay = max_s
        elif poll_s is not None:
            delay = min(delay, poll_s)
        self.attempts += 1
        self.next_attempt_t = now + delay
        return delay

    def add_counters(self, values: dict[str, int]) -> None:
        """Fold a closed stream's counters into the totals."""
        for key, value in values.items():
            self.counters[key] = self.counters.get(key, 0) + value
