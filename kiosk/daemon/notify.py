"""systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING over ``$NOTIFY_SOCKET``.

The watchdog ping runs as a task on the event loop, so a loop that stalls stops pinging and systemd restarts the
service. Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

Sender = Callable[[str], object]


def _default_sender() -> Sender:
    import systemd.daemon as sd_daemon

    def send(message: str) -> object:
        return sd_daemon.notify(message)

    return send


class Notifier:
    """Sends notify messages; knows the watchdog interval systemd asked for."""

    def __init__(self, *, environ: Mapping[str, str] | None = None, sender: Sender | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._send = sender if sender is not None else (_default_sender() if self.enabled else None)
        self.watchdog_s = _watchdog_interval(env)
        self._last_status = ""

    def notify(self, message: str) -> None:
        """Send one message (e.g. ``READY=1``); failures are logged, never raised."""
        if self._send is None:
            return
        try:
            self._send(message)
        except OSError as exc:
            log.warning("systemd notify failed: %s", exc)

    def ready(self, status: str) -> None:
        """Tell systemd start-up is complete."""
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        """Update the one-line status shown by ``systemctl status``."""
        text = text.replace("\n", " ")
        if text != self._last_status:
            self._last_status = text
            self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        """Tell systemd shutdown has begun."""
        self.notify("STOPPING=1\nSTATUS=stopping")

    def reloading(self) -> None:
        """Tell systemd a reload is under way."""
        self.notify("RELOADING=1")

    async def watchdog(self) -> None:
        """Ping every half watchdog interval, forever; returns at once when systemd asked for no watchdog."""
        if self.watchdog_s is None:
            return
        interval = self.watchdog_s / 2
        log.debug("watchdog ping every %.1f s", interval)
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC")
        return None
    return value / 1_000_000 if value > 0 else None
