"""Whose clock is wrong: the broker's HTTP ``Date`` header against the local clock.

A Raspberry Pi has no real-time clock: until NTP has synchronised it, its time can be minutes or years off. The kiosk
never refuses a session on its own clock (the LiveKit server, not the client, judges a token), but when the server
then refuses the token, the broker's ``Date`` header tells a wrong local clock apart from a bad token.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable

import httpx

log = logging.getLogger(__name__)

#: Disagreement (s) between the local clock and the broker's, or a token's validity window, that counts as wrong.
#: HTTP dates have one-second resolution and tokens are minted with some slack: a minute is well clear of both.
CLOCK_LEEWAY_S = 60.0

TIME_SYNC_HINT = (
    "the system clock looks wrong: check time sync with `timedatectl status` and "
    "`systemctl status systemd-timesyncd` (is NTP reachable?)"
)


class ServerClock:
    """The broker's clock as its last HTTP answer gave it; an ``httpx`` response hook keeps it current."""

    def __init__(self, *, now: Callable[[], float] = time.time) -> None:
        self._now = now
        #: Local time minus the broker's (s, positive when the local clock is ahead); None before any answer.
        self.skew_s: float | None = None
        self._warned = False

    async def observe(self, response: httpx.Response) -> None:
        """``httpx`` response hook: read the ``Date`` header (RFC 9110 section 6.6.1)."""
        self.note(response.headers.get("date"))

    def note(self, date: str | None) -> None:
        """Take one ``Date`` header value; a skew past :data:`CLOCK_LEEWAY_S` is logged once, then at debug."""
        if not date:
            return
        try:
            server = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            log.debug("the broker's Date header %r is not an HTTP date", date)
            return
        self.skew_s = self._now() - server
        if self.wrong:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(
                level,
                "the local clock is %s the broker's by %.0f s: %s",
                self.describe(),
                abs(self.skew_s),
                TIME_SYNC_HINT,
            )

    @property
    def wrong(self) -> bool:
        """Whether the local clock and the broker's disagree by more than :data:`CLOCK_LEEWAY_S`."""
        return self.skew_s is not None and abs(self.skew_s) > CLOCK_LEEWAY_S

    def describe(self) -> str:
        """``"ahead of"`` or ``"behind"``, for messages."""
        return "ahead of" if (self.skew_s or 0.0) > 0 else "behind"
