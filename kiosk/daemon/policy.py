"""What the daemon does with a button event, with a failed audio device, and after each session.

The policy decides and asks the driver (the only writer of the session state); it keeps no state but the press that
started a session, the grace timers of failed devices, and the exit code a restart asks systemd for (75,
``EX_TEMPFAIL``: ``Restart=on-failure`` starts the kiosk again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kiosk import session as sm
from kiosk.config import KioskConfig
from kiosk.daemon.sessionsummary import SessionSummary
from kiosk.reasons import FailureReason
from kiosk.trigger import ButtonEvent

if TYPE_CHECKING:
    from kiosk.audio import AudioEngine, AudioHealthEvent

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75
#: How long a device that failed mid-session may take to come back before the session ends as audio_device (s):
#: the audio supervisor reopens it at once, and a glitch it recovers from keeps the session.
AUDIO_LOST_GRACE_S = 2.0


class Steerable(Protocol):
    """What the policies need of the driver."""

    @property
    def config(self) -> KioskConfig:
        """The config in force (it changes on SIGHUP)."""
        ...

    @property
    def snapshot(self) -> sm.Snapshot:
        """The current session snapshot."""
        ...

    @property
    def sessions_done(self) -> int:
        """Sessions finished since start."""
        ...

    def press(self, source: sm.Source, *, at: float | None = None) -> None:
        """A press at ``at`` (``time.monotonic()``, s; None: now): start a session, or end the one under way."""
        ...

    def dispatch(self, event: sm.Event) -> None:
        """Hand the session state machine an event."""
        ...


class Policy:
    """The button's meaning (press, hold) and what happens after each session (stop after a limit, recycle)."""

    def __init__(
        self,
        *,
        driver: Steerable,
        max_sessions: int | None = None,
        on_summary: Callable[[SessionSummary], None] | None = None,
        rss_mb: Callable[[], float] | None = None,
        audio_missing: Callable[[], str | None] | None = None,
    ) -> None:
        """``audio_missing()`` names a device a session cannot do without while it is down (None when all is well)."""
        self._driver = driver
        self._audio_missing = audio_missing
        self._max_sessions = max_sessions
        self._on_summary = on_summary
        self._rss_mb = rss_mb or current_rss_mb
        self._press_started_session = False
        self._audio_lost: dict[str, asyncio.TimerHandle] = {}
        #: 0, or 75 once a hold or the memory limit asked systemd for a restart.
        self.exit_code = 0

    def button(self, event: ButtonEvent, at: float | None = None) -> None:
        """A press toggles the session; a hold ends it (unless that same press started it) or restarts the daemon.

        ``at`` is the button edge's ``time.monotonic()`` (s), where a session started by the press begins (None: now).
        ``trigger.hold_action`` is read at each hold, so a reload takes effect at once.
        """
        driver = self._driver
        action = driver.config.trigger.hold_action
        if event == ButtonEvent.PRESS:
            before = driver.snapshot.state
            self.press(sm.Source.BUTTON, at=at)
            self._press_started_session = before != driver.snapshot.state == sm.State.CONNECTING
        elif action == "end" and driver.snapshot.in_session and not self._press_started_session:
            # A visitor who keeps the button down after starting a session keeps it.
            driver.press(sm.Source.BUTTON)
        elif action == "restart":
            log.warning("button held: restarting the daemon")
            self.exit_code = EX_TEMPFAIL
            driver.dispatch(sm.Shutdown())

    def press(self, source: sm.Source, *, at: float | None = None) -> None:
        """A press from ``source`` at ``at`` (``time.monotonic()``, s; None: now): ends a session under way; starts
        one unless a device it needs is missing.

        With the microphone missing, a session would be paid for and the agent would hear nothing: the press fails
        at once as ``audio_device`` (1 flash) and no broker start is made.
        """
        driver = self._driver
        missing = None if driver.snapshot.in_session or self._audio_missing is None else self._audio_missing()
        if missing is None:
            driver.press(source, at=at)
            return
        log.warning("press refused: %s", missing)
        driver.dispatch(sm.Failure(FailureReason.AUDIO_DEVICE))

    def audio_health(self, event: AudioHealthEvent) -> None:
        """A device failed or came back: out of a session the failure shows at once (``audio_device``); in one, the
        session ends only if the device is still down after ``AUDIO_LOST_GRACE_S``."""
        pending = self._audio_lost.pop(event.direction, None)
        if pending is not None:
            pending.cancel()
        if event.ok:
            return
        reason = event.reason or FailureReason.AUDIO_DEVICE
        if not self._driver.snapshot.in_session:
            self._driver.dispatch(sm.Failure(reason))
            return
        self._audio_lost[event.direction] = asyncio.get_running_loop().call_later(
            AUDIO_LOST_GRACE_S, self._audio_still_lost, event.direction, reason
        )

    def _audio_still_lost(self, direction: str, reason: FailureReason) -> None:
        self._audio_lost.pop(direction, None)
        if self._driver.snapshot.in_session:
            log.warning("audio %s still down after %.0f s: ending the session", direction, AUDIO_LOST_GRACE_S)
            self._driver.dispatch(sm.Failure(reason))

    def session_done(self, summary: SessionSummary) -> None:
        """Report the session; stop after ``max_sessions``, or exit 75 between visitors past the memory limit."""
        if self._on_summary is not None:
            self._on_summary(summary)
        driver = self._driver
        if (self._max_sessions is not None and driver.sessions_done >= self._max_sessions) or self._recycle():
            driver.dispatch(sm.Shutdown())

    def _recycle(self) -> bool:
        limit = self._driver.config.daemon.recycle_rss_mb
        if not limit:
            return False
        used = self._rss_mb()
        if used < limit:
            return False
        log.warning(
            "memory %.0f MB is above daemon.recycle_rss_mb = %d: restarting between visitors to release it", used, limit
        )
        self.exit_code = EX_TEMPFAIL
        return True


def current_rss_mb() -> float:
    """This process's resident memory in MB (Linux ``/proc/self/status``; 0 where it cannot be read)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def microphone_missing(audio: AudioEngine) -> str | None:
    """Words for ``kiosk status`` and a refused press while the microphone is not open (None while it is)."""
    if audio.input.stream is not None:
        return None
    why = audio.input.last_error or "not open"
    return (
        f"the microphone is missing ({why}); no session can start until it is back: plug it in, or set "
        "audio.input_device to one `kiosk devices` lists"
    )
