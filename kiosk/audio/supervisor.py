"""Watches both directions for errors and stalls, reports them and reopens devices with backoff.

A device that is absent (not plugged in yet, a USB hub slow at boot) is looked for every ``POLL_S`` at most, however
long it has been missing; PortAudio lists devices once, so after ``RESCAN_AFTER`` failed attempts each attempt
rescans first. A rescan needs every stream closed: the other direction is closed for it and reopened at once after
it, and this happens only while no session captures audio (between visitors the speaker plays silence). A device
whose PortAudio call hung is retried after ``audio.reopen_backoff_max_s`` and no rescan runs any more (see
:mod:`kiosk.audio.worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from kiosk.audio.health import AudioHealthEvent
from kiosk.audio.recovery import Direction
from kiosk.config import AudioConfig
from kiosk.errors import AudioDeviceError
from kiosk.reasons import FailureReason

log = logging.getLogger(__name__)

#: A stream silent while the kiosk is short of CPU is excused up to this many stall timeouts: a device that died
#: under a tight CPU quota is still failed and reopened.
STARVED_STALL_FACTOR = 3
#: Failed reopen attempts of a missing device before PortAudio's device list is refreshed.
RESCAN_AFTER = 2
#: The longest wait between two looks for a device that could not be opened (s): a device plugged in is in use
#: within this (plus a rescan, 0.1-1 s). Looking costs a device-list lookup or an ALSA open that fails at once.
POLL_S = 2.0


class SupervisedDevices(Protocol):
    """What the supervisor needs of the part that owns the two devices (:class:`~kiosk.audio.engine.AudioEngine`)."""

    @property
    def config(self) -> AudioConfig:
        """The ``[audio]`` settings: ``stall_timeout_s`` and ``reopen_backoff_max_s`` (s) are read here."""
        ...

    @property
    def input(self) -> Direction:
        """The microphone's state: its stream (None while closed), failure, counters and retry schedule."""
        ...

    @property
    def output(self) -> Direction:
        """The speaker's state, as :attr:`input`."""
        ...

    async def open_direction(self, direction: Direction) -> None:
        """Open ``direction``'s device and start its stream; raises ``AudioDeviceError`` when it cannot."""
        ...

    async def close_direction(self, direction: Direction, error: str | None) -> None:
        """Close ``direction``'s stream, keeping its counters; ``error`` (when given) becomes its last error."""
        ...

    async def rescan(self) -> bool:
        """Refresh PortAudio's device list (every stream closed); False when it cannot be done any more."""
        ...

    def processing(self) -> bool:
        """Whether a session (or a frame subscriber) uses the microphone now: no rescan then."""
        ...

    def report(self, event: AudioHealthEvent) -> None:
        """Tell health subscribers about a device failure or recovery."""
        ...


class Supervisor:
    """A loop task that checks both directions a few times per stall timeout."""

    def __init__(
        self,
        *,
        devices: SupervisedDevices,
        clock: Callable[[], float],
        rng: Callable[[], float],
        short_of_cpu: Callable[[float], bool] = lambda within_s: False,
    ) -> None:
        """``short_of_cpu(within_s)``: whether the kiosk was short of CPU at any time in the last ``within_s`` (s);
        a stall then is the kiosk's own starvation, not the device's, and is judged only once it lasts
        :data:`STARVED_STALL_FACTOR` stall timeouts."""
        self._devices = devices
        self._short_of_cpu = short_of_cpu
        self._told_starved: set[str] = set()
        self._clock = clock
        self._rng = rng
        self._task: asyncio.Task[None] | None = None
        self._interval = min(0.25, devices.config.stall_timeout_s / 4)
        self._told_no_rescan = False

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
        devices = self._devices
        while True:
            await asyncio.sleep(self._interval)
            for direction in (devices.input, devices.output):
                try:
                    await self.check(direction)
                except Exception:
                    # The supervisor must outlive anything a device throws at it.
                    log.exception("audio supervisor failed checking the %s", direction.name)

    async def check(self, direction: Direction) -> None:
        """Detect a failure of ``direction`` or, if it is down and due, try reopening it."""
        now = self._clock()
        config = self._devices.config
        if direction.stream is not None:
            problem = direction.failed
            if problem is None and direction.stalled(now, config.stall_timeout_s):
                excused = not direction.stalled(now, STARVED_STALL_FACTOR * config.stall_timeout_s)
                if excused and self._short_of_cpu(config.stall_timeout_s):
                    self._starved(direction)
                    return
                problem = f"no audio for {config.stall_timeout_s:g} s"
            self._told_starved.discard(direction.name)
            if problem is not None:
                await self._fail(direction, problem, now)
            return
        if now >= direction.next_attempt_t:
            await self._reopen(direction, now)

    def _starved(self, direction: Direction) -> None:
        """Say once per stall that a silent stream is not called failed while the kiosk is short of CPU."""
        if direction.name not in self._told_starved:
            self._told_starved.add(direction.name)
            timeout = self._devices.config.stall_timeout_s
            log.info(
                "audio %s: no audio for %g s while the kiosk is short of CPU; not judged a device failure before %g s",
                direction.name,
                timeout,
                STARVED_STALL_FACTOR * timeout,
            )

    async def _fail(self, direction: Direction, problem: str, now: float) -> None:
        direction.failures += 1
        message = f"audio {direction.name} device {direction.device!r} failed: {problem}"
        log.warning("%s; reopening", message)
        await self._devices.close_direction(direction, problem)
        direction.attempts = 0
        direction.schedule_retry(now, max_s=self._devices.config.reopen_backoff_max_s, rng=self._rng)
        self._devices.report(
            AudioHealthEvent(direction=direction.name, ok=False, message=message, reason=FailureReason.AUDIO_DEVICE)
        )

    async def _reopen(self, direction: Direction, now: float) -> None:
        devices = self._devices
        if direction.attempts > RESCAN_AFTER:
            await self._rescan(direction)
        try:
            await devices.open_direction(direction)
        except AudioDeviceError as exc:
            direction.last_error = str(exc).splitlines()[0]
            delay = direction.schedule_retry(
                self._clock(), max_s=devices.config.reopen_backoff_max_s, rng=self._rng, poll_s=POLL_S
            )
            log.info("audio %s still unavailable (%s); next try in %.1f s", direction.name, direction.last_error, delay)
            return
        direction.reopens += 1
        direction.attempts = 0
        log.info("audio %s device %r is back", direction.name, direction.device)
        devices.report(AudioHealthEvent(direction=direction.name, ok=True, message=f"{direction.name} reopened"))

    async def _rescan(self, direction: Direction) -> None:
        """Refresh PortAudio's device list so a device plugged in since start can be found.

        PortAudio closes every stream on a rescan, so the other direction is closed first and reopened right after;
        skipped while a session captures audio (the visitor would lose the speaker or the microphone).
        """
        devices = self._devices
        other = self._other(direction)
        if other.stream is not None and devices.processing():
            return
        reopen = other.stream is not None
        if reopen:
            await devices.close_direction(other, None)
        if not await devices.rescan() and not self._told_no_rescan:
            self._told_no_rescan = True
            log.warning(
                "audio devices are not rescanned any more (a PortAudio call hung earlier); a device plugged in now is "
                "found only after a restart of the kiosk"
            )
        if reopen:
            try:
                await devices.open_direction(other)
            except AudioDeviceError as exc:
                # The other direction is down now: its own check reopens it with backoff and reports it.
                other.last_error = str(exc).splitlines()[0]
                other.schedule_retry(self._clock(), max_s=devices.config.reopen_backoff_max_s, rng=self._rng)
                message = f"audio {other.name} device did not reopen after a rescan: {other.last_error}"
                log.warning("%s", message)
                devices.report(
                    AudioHealthEvent(direction=other.name, ok=False, message=message, reason=FailureReason.AUDIO_DEVICE)
                )

    def _other(self, direction: Direction) -> Direction:
        return self._devices.output if direction is self._devices.input else self._devices.input
