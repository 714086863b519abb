"""The background retries of session ends the broker did not confirm.

For :data:`PROMPT_RETRY_S` after an end first failed it is retried about every :data:`PROMPT_WAIT_S`, each attempt
bounded to :data:`PROMPT_ATTEMPT_S`: a lobby's access point that reboots is back within a minute or two, and the paid
session it held should end within seconds of that. Each attempt opens a fresh connection, so the end does not wait on
a request sent into the outage (TCP retransmits a lost SYN after 1, 3, 7, 15 s). After that the backoff grows to
``broker.end_retry_max_s``, so a broker that is down for long is not hammered, until :data:`END_GIVE_UP_S`. Attempts
are made only while no session runs (``idle``), with stamina's jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import stamina

from .ledger import LedgerEntry

log = logging.getLogger(__name__)

FIRST_RETRY_S = 1.0
PROMPT_RETRY_S = 120.0
PROMPT_WAIT_S = 1.0
PROMPT_ATTEMPT_S = 3.0
#: How long a session's end is retried in the background before the keeper gives up until the next start (1 h: an
#: operator's alert on a pending end fires after that long). The record stays on disk, so a restart tries again.
END_GIVE_UP_S = 3600.0

#: One attempt to end a record's session, bounded to the given seconds (None: ``broker.timeout_s``); True if ended.
EndOnce = Callable[[LedgerEntry, float | None], Awaitable[bool]]


class _EndNotConfirmed(Exception):
    """One background end attempt failed (stamina retries on it)."""


class EndRetries:
    """Retries, in background tasks, the ends of the sessions handed to :meth:`schedule` until each is confirmed."""

    def __init__(
        self,
        *,
        end_once: EndOnce,
        idle: asyncio.Event,
        retry_max_s: float,
        first_retry_s: float = FIRST_RETRY_S,
        give_up_s: float = END_GIVE_UP_S,
    ) -> None:
        """Attempt with ``end_once`` whenever ``idle`` is set; back off from ``first_retry_s`` to ``retry_max_s`` (s)
        after the prompt phase, and give up after ``give_up_s`` (s)."""
        self._end_once = end_once
        self._idle = idle
        self._retry_max_s = retry_max_s
        self._first_retry_s = first_retry_s
        self._give_up_s = give_up_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._records: dict[str, LedgerEntry] = {}

    @property
    def pending(self) -> int:
        """How many ends still wait for the broker's confirmation."""
        return sum(1 for task in self._tasks.values() if not task.done())

    def oldest_started(self) -> dt.datetime | None:
        """When the oldest session whose end is still retried was started (UTC), if any."""
        return min((self._records[key].started_at for key, t in self._tasks.items() if not t.done()), default=None)

    def covers(self, record_id: str) -> bool:
        """True while the end of record ``record_id`` is being retried here."""
        return record_id in self._tasks

    def schedule(self, record: LedgerEntry) -> None:
        """Retry the end of ``record``'s session (no-op while it already is)."""
        existing = self._tasks.get(record.id)
        if existing is not None and not existing.done():
            return
        self._records[record.id] = record
        self._tasks[record.id] = asyncio.get_running_loop().create_task(
            self._until_ended(record), name=f"end-{record.id}"
        )

    async def aclose(self) -> None:
        """Stop every retry (the records stay on disk for the next start)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _retry(self, record: LedgerEntry, *, for_s: float, wait_s: float, attempt_s: float | None = None) -> None:
        """Retry the end while no session runs, backing off to ``wait_s``, for ``for_s``; raises _EndNotConfirmed."""
        async for attempt in stamina.retry_context(
            on=_EndNotConfirmed,
            attempts=None,
            timeout=max(for_s, self._first_retry_s),
            wait_initial=self._first_retry_s,
            wait_max=max(wait_s, self._first_retry_s),
            wait_jitter=self._first_retry_s,
        ):
            with attempt:
                await self._idle.wait()
                if not await self._end_once(record, attempt_s):
                    raise _EndNotConfirmed(record.id)

    async def _until_ended(self, record: LedgerEntry) -> None:
        """Retry promptly, then backing off to ``retry_max_s``, for ``give_up_s`` at most."""
        await asyncio.sleep(self._first_retry_s)  # the attempt that failed was just made
        prompt_s = min(PROMPT_RETRY_S, self._give_up_s)
        try:
            try:
                await self._retry(record, for_s=prompt_s, wait_s=PROMPT_WAIT_S, attempt_s=PROMPT_ATTEMPT_S)
            except _EndNotConfirmed:
                await self._retry(record, for_s=self._give_up_s - prompt_s, wait_s=self._retry_max_s)
            self._records.pop(record.id, None)
        except _EndNotConfirmed:
            ticket = record.ticket()
            log.warning(
                "session %s (%s, room %s): the broker has not confirmed its end after %.0f min of retries; giving up "
                "until the next start. If the broker stays unreachable, end it in the vendor's console",
                record.id,
                record.dialect,
                ticket.room if ticket else "unknown",
                self._give_up_s / 60,
            )
        self._tasks.pop(record.id, None)
