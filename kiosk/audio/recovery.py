"""Keeping a device direction alive: failure bookkeeping and jittered exponential backoff."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

#: First reopen delay; doubled per failed attempt up to ``audio.reopen_backoff_max_s``.
BACKOFF_BASE_S = 0.1


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
        """True when the stream has delivered nothing for ``timeout_s``."""
        if self.stream is None:
            return False
        last = self.stream.last_block_t
        return now - max(last if last is not None else self.opened_t, self.opened_t) > timeout_s

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
