"""Watches both directions for errors and stalls, reports them and reopens devices with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kiosk.audio.health import AudioHealthEvent
from kiosk.audio.recovery import Direction
from kiosk.errors import AudioDeviceError
from kiosk.reasons import FailureReason

if TYPE_CHECKING:
    from kiosk.audio.engine import AudioEngine

log = logging.getLogger(__name__)

#: Failed reopen attempts of a missing device before PortAudio's device list is refreshed.
RESCAN_AFTER = 2


class Supervisor:
    """A loop task that checks both directions a few times per stall timeout."""

    def __init__(self, *, engine: AudioEngine, clock: Callable[[], float], rng: Callable[[], float]) -> None:
        self._engine = engine
        self._clock = clock
        self._rng = rng
        self._task: asyncio.Task[None] | None = None
        self._interval = min(0.25, engine.config.stall_timeout_s / 4)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching."""
        self._task = loop.create_task(self._run(), name="audio-supervisor")

    async def stop(self) -> None:
        """Stop watching (the streams stay as they are)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        engine = self._engine
        while True:
            await asyncio.sleep(self._interval)
            for direction in (engine.input, engine.output):
                try:
                    await self.check(direction)
                except Exception:
                    # The supervisor must outlive anything a device throws at it.
                    log.exception("audio supervisor failed checking the %s", direction.name)

    async def check(self, direction: Direction) -> None:
        """Detect a failure of ``direction`` or, if it is down and due, try reopening it."""
        now = self._clock()
        config = self._engine.config
        if direction.stream is not None:
            problem = direction.failed
            if problem is None and direction.stalled(now, config.stall_timeout_s):
                problem = f"no audio for {config.stall_timeout_s:g} s"
            if problem is not None:
                await self._fail(direction, problem, now)
            return
        if now >= direction.next_attempt_t:
            await self._reopen(direction, now)

    async def _fail(self, direction: Direction, problem: str, now: float) -> None:
        direction.failures += 1
        message = f"audio {direction.name} device {direction.device!r} failed: {problem}"
        log.warning("%s; reopening", message)
        await self._engine.close_direction(direction, problem)
        direction.attempts = 0
        direction.schedule_retry(now, max_s=self._engine.config.reopen_backoff_max_s, rng=self._rng)
        self._engine.report(
            AudioHealthEvent(direction=direction.name, ok=False, message=message, reason=FailureReason.AUDIO_DEVICE)
        )

    async def _reopen(self, direction: Direction, now: float) -> None:
        engine = self._engine
        if direction.attempts > RESCAN_AFTER and self._other(direction).stream is None:
            # PortAudio lists devices once; a device plugged back in only appears after a rescan,
            # which is safe only while no stream is open.
            await engine.portaudio(engine.factory.rescan)
        try:
            await engine.open_direction(direction)
        except AudioDeviceError as exc:
            direction.last_error = str(exc).splitlines()[0]
            delay = direction.schedule_retry(now, max_s=engine.config.reopen_backoff_max_s, rng=self._rng)
            log.info("audio %s still unavailable (%s); next try in %.1f s", direction.name, exc, delay)
            if direction.attempts > RESCAN_AFTER and self._other(direction).stream is not None:
                # Free the other direction so the next attempt may rescan; it reopens right away after.
                await self._engine.close_direction(self._other(direction), None)
            return
        direction.reopens += 1
        direction.attempts = 0
        log.info("audio %s device %r is back", direction.name, direction.device)
        engine.report(AudioHealthEvent(direction=direction.name, ok=True, message=f"{direction.name} reopened"))

    def _other(self, direction: Direction) -> Direction:
        return self._engine.output if direction is self._engine.input else self._engine.input
