"""No session left open: every session is recorded before it starts and ended at the broker on every exit path.

:meth:`SessionKeeper.session` is the guard the daemon uses::

    async with keeper.session(deadline=connect_deadline) as grant:
        ...  # join grant.room at grant.server_url, converse
    # normal end, failure after start, cancellation (SIGTERM) or exception: the session is ended here

An end that fails is retried in a background task with jittered backoff (capped at ``broker.end_retry_max_s``)
while no session is running, and never blocks the next visitor. :meth:`SessionKeeper.recover` ends, at daemon start,
every session a crash or power loss left recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import stamina

from kiosk.errors import BrokerError
from kiosk.reasons import FailureReason

from .base import Broker
from .grant import EndTicket, Grant
from .ledger import SessionLedger, SessionRecord

log = logging.getLogger(__name__)

#: Dialects whose end calls nothing: a record of theirs can be dropped by any keeper.
NOTHING_TO_CALL = frozenset({"oshara", "livekit", "self"})
FIRST_RETRY_S = 1.0
#: How long a session's end is retried in the background before the keeper gives up until the next start (1 h: an
#: operator's alert on a pending end fires after that long). The record stays on disk, so a restart tries again.
END_GIVE_UP_S = 3600.0
#: Start failures that come with the broker's answer: nothing was opened, so there is nothing to end.
_ANSWERED = frozenset(
    {
        FailureReason.BROKER_UNAUTHORIZED,
        FailureReason.BROKER_REJECTED,
        FailureReason.BROKER_ERROR,
    }
)


class _EndNotConfirmed(Exception):
    """One background end attempt failed (stamina retries on it)."""


@dataclasses.dataclass
class BrokerSession:
    """A started session: its grant and the record that keeps it from being forgotten."""

    grant: Grant
    record: SessionRecord


class SessionKeeper:
    """Starts sessions with a record on disk, and ends every one of them at the broker."""

    def __init__(
        self,
        *,
        broker: Broker,
        ledger: SessionLedger,
        end_timeout_s: float,
        end_retry_max_s: float,
        first_retry_s: float = FIRST_RETRY_S,
        end_give_up_s: float = END_GIVE_UP_S,
    ) -> None:
        self.broker = broker
        self.ledger = ledger
        self._end_timeout_s = end_timeout_s
        self._end_retry_max_s = end_retry_max_s
        self._first_retry_s = first_retry_s
        self._end_give_up_s = end_give_up_s
        self._detached: set[asyncio.Future[bool]] = set()
        self._active: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._background: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, SessionRecord] = {}
        #: Told of every broker call: ``on_call(operation "start" | "end", seconds, ok)`` (metrics observe this).
        self.on_call: Callable[[str, float, bool], None] | None = None

    def __repr__(self) -> str:
        return f"SessionKeeper(broker={self.broker!r}, ledger={self.ledger!r})"

    @property
    def retrying(self) -> int:
        """How many ended sessions still wait for the broker's confirmation in the background."""
        return sum(1 for task in self._background.values() if not task.done())

    def oldest_pending_start(self) -> dt.datetime | None:
        """When the oldest session still waiting for its end in the background was started (UTC), if any."""
        waiting = [self._waiting[key].started_at for key, task in self._background.items() if not task.done()]
        return min(waiting, default=None)

    def _report(self, operation: str, started: float, ok: bool) -> None:
        if self.on_call is not None:
            self.on_call(operation, time.monotonic() - started, ok)

    @contextlib.asynccontextmanager
    async def session(self, *, deadline: float | None = None) -> AsyncIterator[Grant]:
        """Start a session (``deadline``: ``time.monotonic()`` bound of the start) and end it on every exit path."""
        started = await self.start(deadline=deadline)
        try:
            yield started.grant
        finally:
            await self.end(started)

    async def start(self, *, deadline: float | None = None) -> BrokerSession:
        """Record, then start a session; if the start fails after the room is known, end it before re-raising."""
        try:
            record = self.ledger.begin(dialect=self.broker.dialect, url=self.broker.url, identity=self.broker.identity)
        except OSError as exc:
            raise BrokerError(
                f"cannot write the session record in {self.ledger.directory} ({exc.strerror or exc}); "
                "not starting a session that a crash could leave open: check daemon.state_dir",
                reason=FailureReason.INTERNAL,
            ) from None
        current = [record]

        def on_room(ticket: EndTicket) -> None:
            # Remember the room in memory first: if the disk write fails, the session is still ended below.
            current[0] = current[0].with_ticket(ticket)
            try:
                self.ledger.save(current[0])
            except OSError as exc:
                raise BrokerError(
                    f"cannot update the session record in {self.ledger.directory} ({exc.strerror or exc}); "
                    "ending the session rather than risk leaving it open",
                    reason=FailureReason.INTERNAL,
                ) from None

        self._active.add(record.id)
        self._idle.clear()
        asked = time.monotonic()
        try:
            grant = await self.broker.start(deadline=deadline, on_room=on_room)
        except BaseException as exc:
            self._report("start", asked, ok=False)
            if current[0].ticket() is None and isinstance(exc, BrokerError) and exc.reason in _ANSWERED:
                # The broker answered with a refusal: no session was opened, the record has nothing to end.
                self.ledger.remove(current[0].id)
                self._release(current[0].id)
            else:
                await self._finish(current[0])
            raise
        self._report("start", asked, ok=True)
        return BrokerSession(grant=grant, record=current[0])

    async def end(self, session: BrokerSession) -> bool:
        """End ``session`` at the broker; True if confirmed now, False if handed to the background retries."""
        return await self._finish(session.record)

    async def recover(self) -> int:
        """End every session left recorded by an earlier run; return how many were confirmed ended now."""
        records = [
            record
            for record in self.ledger.pending()
            if record.id not in self._active and record.id not in self._background
        ]
        orphans = []
        for record in records:
            if record.owned_by_live_process():
                log.info("session record %s belongs to running process %d; leaving it", record.id, record.pid)
                continue
            log.warning(
                "found session %s (%s, room %s) left open by an earlier run; ending it",
                record.id,
                record.dialect,
                record.room or "unknown",
            )
            orphans.append(record)
        results = await asyncio.gather(*(self._end_once(record) for record in orphans))
        for record, ended in zip(orphans, results, strict=True):
            if not ended:
                self._retry_later(record)
        return sum(results)

    async def aclose(self) -> None:
        """Stop background retries and detached ends (their records stay on disk for the next start)."""
        tasks: list[asyncio.Future[Any]] = [*self._background.values(), *self._detached]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background.clear()

    async def _finish(self, record: SessionRecord) -> bool:
        try:
            ending = asyncio.ensure_future(self._end_once(record))
            try:
                ended = await asyncio.shield(ending)
            except asyncio.CancelledError:
                # Cancelled again while ending: let the end run on, then retry it if it failed.
                self._detached.add(ending)
                ending.add_done_callback(lambda task: self._after_detached_end(record, task))
                raise
            if not ended:
                self._retry_later(record)
            return ended
        finally:
            self._release(record.id)

    def _release(self, record_id: str) -> None:
        self._active.discard(record_id)
        if not self._active:
            self._idle.set()

    def _after_detached_end(self, record: SessionRecord, task: asyncio.Future[bool]) -> None:
        self._detached.discard(task)
        if task.cancelled() or task.exception() is not None or not task.result():
            self._retry_later(record)

    async def _end_once(self, record: SessionRecord) -> bool:
        """One bounded attempt to end ``record``'s session; True once the record could be removed."""
        ticket = record.ticket()
        if ticket is None:
            log.warning(
                "session %s (%s): the start's answer never arrived, so its room is unknown and there is "
                "nothing the kiosk can end; forgetting it",
                record.id,
                record.dialect,
            )
            self.ledger.remove(record.id)
            return True
        if record.dialect != self.broker.dialect:
            if record.dialect not in NOTHING_TO_CALL:
                log.error(
                    "session %s: room %s was started with dialect %s but the kiosk is now configured for %s; "
                    "it cannot be ended from here: end it in the %s console",
                    record.id,
                    ticket.room,
                    record.dialect,
                    self.broker.dialect,
                    record.dialect,
                )
            self.ledger.remove(record.id)
            return True
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._end_timeout_s + 1.0):
                await self.broker.end(ticket, deadline=started + self._end_timeout_s)
        except Exception:
            # Supervisor boundary of one end attempt: whatever failed, the record stays and the end is retried.
            self._report("end", started, ok=False)
            log.warning("ending room %s failed; will retry", ticket.room, exc_info=True)
            return False
        self._report("end", started, ok=True)
        self.ledger.remove(record.id)
        log.info("session %s ended (room %s) in %.0f ms", record.id, ticket.room, (time.monotonic() - started) * 1e3)
        return True

    def _retry_later(self, record: SessionRecord) -> None:
        existing = self._background.get(record.id)
        if existing is not None and not existing.done():
            return
        self._waiting[record.id] = record
        self._background[record.id] = asyncio.get_running_loop().create_task(
            self._retry_until_ended(record), name=f"end-{record.id}"
        )

    async def _retry_until_ended(self, record: SessionRecord) -> None:
        """Retry the end while no session runs, backing off to ``end_retry_max_s``, for ``end_give_up_s`` at most."""
        await asyncio.sleep(self._first_retry_s)  # the attempt that failed was just made
        try:
            async for attempt in stamina.retry_context(
                on=_EndNotConfirmed,
                attempts=None,
                timeout=self._end_give_up_s,
                wait_initial=self._first_retry_s,
                wait_max=self._end_retry_max_s,
                wait_jitter=self._first_retry_s,
            ):
                with attempt:
                    await self._idle.wait()
                    if not await self._end_once(record):
                        raise _EndNotConfirmed(record.id)
            self._waiting.pop(record.id, None)
        except _EndNotConfirmed:
            ticket = record.ticket()
            log.warning(
                "session %s (%s, room %s): the broker has not confirmed its end after %.0f min of retries; giving up "
                "until the next start. If the broker stays unreachable, end it in the vendor's console",
                record.id,
                record.dialect,
                ticket.room if ticket else "unknown",
                self._end_give_up_s / 60,
            )
        self._background.pop(record.id, None)
