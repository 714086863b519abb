"""Keeping a device direction alive: failure bookkeeping and jittered exponential backoff."""

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

    def schedule_retry(self, now: float, *, max_s: float, rng: Callable[[], float]) -> float:
        """Plan the next reopen attempt and return its delay."""
        delay = backoff_delay(self.attempts, max_s=max_s, rng=rng)
        self.attempts += 1
        self.next_attempt_t = now + delay
        return delay

    def add_counters(self, values: dict[str, int]) -> None:
        """Fold a closed stream's counters into the totals."""
        for key, value in values.items():
            self.counters[key] = self.counters.get(key, 0) + value
