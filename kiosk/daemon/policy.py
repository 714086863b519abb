"""What the daemon does with a button event and after each session: the hold and memory-recycle policy.

Both decide, and ask the driver; neither keeps any state but the press that started a session and the exit code a
restart asks systemd for (75, ``EX_TEMPFAIL``: ``Restart=on-failure`` starts the kiosk again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kiosk import session as sm
from kiosk.config import KioskConfig
from kiosk.daemon.sessionsummary import SessionSummary
from kiosk.trigger import ButtonEvent

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75


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

    def press(self, source: sm.Source) -> None:
        """A press: start a session, or end the one under way."""
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
    ) -> None:
        self._driver = driver
        self._max_sessions = max_sessions
        self._on_summary = on_summary
        self._rss_mb = rss_mb or current_rss_mb
        self._press_started_session = False
        #: 0, or 75 once a hold or the memory limit asked systemd for a restart.
        self.exit_code = 0

    def button(self, event: ButtonEvent) -> None:
        """A press toggles the session; a hold ends it (unless that same press started it) or restarts the daemon.

        ``trigger.hold_action`` is read at each hold, so a reload takes effect at once.
        """
        driver = self._driver
        action = driver.config.trigger.hold_action
        if event == ButtonEvent.PRESS:
            before = driver.snapshot.state
            driver.press(sm.Source.BUTTON)
            self._press_started_session = before != driver.snapshot.state == sm.State.CONNECTING
        elif action == "end" and driver.snapshot.in_session and not self._press_started_session:
            # A visitor who keeps the button down after starting a session keeps it.
            driver.press(sm.Source.BUTTON)
        elif action == "restart":
            log.warning("button held: restarting the daemon")
            self.exit_code = EX_TEMPFAIL
            driver.dispatch(sm.Shutdown())

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
