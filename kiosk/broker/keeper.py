"""No session left open: every session is recorded before it starts and ended at the broker on every exit path.

:meth:`SessionKeeper.start` and :meth:`SessionKeeper.end` are the pair the daemon's session run uses::

    started = await keeper.start(deadline=connect_deadline)
    try:
        ...  # join started.grant.room at started.grant.server_url, converse
    finally:
        await keeper.end(started)  # normal end, failure after start, cancellation (SIGTERM) or exception

An end that fails is retried in a background task with jittered backoff (capped at ``broker.end_retry_max_s``)
while no session is running (:mod:`kiosk.broker.end_retries`), and never blocks the next visitor. :meth:`SessionKeeper.recover` ends, at daemon start,
every session a crash or power loss left recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from kiosk.errors import BrokerError, StateDirError
from kiosk.reasons import FailureReason

from .base import Broker
from .connection import ConnectionDetails, EndTicket
from .end_retries import END_GIVE_UP_S, FIRST_RETRY_S, EndRetries
from .http import READ_ON_S
from .ledger import LedgerEntry, SessionLedger, state_dir_problem

log = logging.getLogger(__name__)

#: Dialects whose end calls nothing: a record of theirs can be dropped by any keeper.
NOTHING_TO_CALL = frozenset({"oshara", "livekit", "self"})
__all__ = ["BrokerSession", "SessionKeeper"]
#: Start failures that come with the broker's answer: nothing was opened, so there is nothing to end.
_ANSWERED = frozenset(
    {
        FailureReason.BROKER_UNAUTHORIZED,
        FailureReason.BROKER_REJECTED,
        FailureReason.BROKER_ERROR,
    }
)


async def _cancel_all(tasks: list[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _quietly(task: asyncio.Task[BrokerSession]) -> None:
    """Done callback of a start nobody waits for any more: its failure was handled, only note it."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.info("a start the kiosk had stopped waiting for failed: %s", exc)


@dataclasses.dataclass
class BrokerSession:
    """A started session: its grant and the record that keeps it from being forgotten."""

    grant: ConnectionDetails
    record: LedgerEntry


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
        self._detached: set[asyncio.Future[bool]] = set()
        self._active: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retries = EndRetries(
            end_once=lambda record, timeout_s: self._end_once(record, timeout_s=timeout_s),
            idle=self._idle,
            retry_max_s=end_retry_max_s,
            first_retry_s=first_retry_s,
            give_up_s=end_give_up_s,
        )
        #: Records whose end failed at least once (later failures are logged at debug).
        self._failed_once: set[str] = set()
        self._starts: dict[str, asyncio.Task[BrokerSession]] = {}
        #: Starts the caller stopped waiting for, and when it did (``time.monotonic()``).
        self._abandoned: dict[str, float] = {}
        #: Told of every broker call: ``on_call(operation "start" | "end", seconds, ok)`` (metrics observe this).
        self.on_call: Callable[[str, float, bool], None] | None = None

    def __repr__(self) -> str:
        return f"SessionKeeper(broker={self.broker!r}, ledger={self.ledger!r})"

    @property
    def retrying(self) -> int:
        """How many ended sessions still wait for the broker's confirmation in the background."""
        return self._retries.pending

    def oldest_pending_start(self) -> dt.datetime | None:
        """When the oldest session still waiting for its end in the background was started (UTC), if any."""
        return self._retries.oldest_started()

    def _report(self, operation: str, started: float, ok: bool) -> None:
        if self.on_call is not None:
            self.on_call(operation, time.monotonic() - started, ok)

    async def start(self, *, deadline: float | None = None) -> BrokerSession:
        """Record, then start a session; wait for it until ``deadline`` (``time.monotonic()``) at most.

        The start runs as a task of the keeper's own: when the caller stops waiting (the deadline passed, or it
        was cancelled: a teardown, the visitor pressing again, SIGTERM), the request goes on in the background,
        bounded by the broker's own limits (:data:`kiosk.broker.http.READ_ON_S`), and a session it turns out to
        have opened is recorded and ended. Raises :class:`BrokerError` (``broker_timeout`` at the deadline,
        ``state_dir`` when the record cannot be written, or the broker's failure).
        """
        record = self._begin()
        task = asyncio.get_running_loop().create_task(self._start(record, deadline), name=f"start-{record.id}")
        self._starts[record.id] = task
        try:
            await asyncio.wait({task}, timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except asyncio.CancelledError:
            self._abandon(record, task)
            raise
        if not task.done():
            self._abandon(record, task)
            raise BrokerError(
                f"{self.broker.dialect}: the broker did not answer the start by the connect deadline; the request "
                "goes on in the background and a session it opens is ended",
                reason=FailureReason.BROKER_TIMEOUT,
            )
        return task.result()

    @property
    def starting(self) -> int:
        """How many broker starts are still under way (including ones the kiosk stopped waiting for)."""
        return sum(1 for task in self._starts.values() if not task.done())

    def _begin(self) -> LedgerEntry:
        try:
            return self.ledger.begin(dialect=self.broker.dialect, url=self.broker.url, identity=self.broker.identity)
        except OSError as exc:
            raise StateDirError(
                f"{state_dir_problem(exc, self.ledger.directory)}; not starting a session that a crash could leave open"
            ) from None

    def _abandon(self, record: LedgerEntry, task: asyncio.Task[BrokerSession]) -> None:
        """The caller stopped waiting for ``task``: from now on it ends whatever session it opens."""
        if task.done():
            return
        self._abandoned[record.id] = time.monotonic()
        log.warning(
            "session %s: stopped waiting for the broker's start; it goes on in the background (for %.0f s at "
            "most) and a session it opens is ended",
            record.id,
            READ_ON_S,
        )
        task.add_done_callback(_quietly)

    async def _start(self, record: LedgerEntry, deadline: float | None) -> BrokerSession:
        """The start request itself; a failure after the room is known, or an abandoned success, ends the session."""
        current = [record]

        def on_room(ticket: EndTicket) -> None:
            # Remember the room in memory first: if the disk write fails, the session is still ended below.
            current[0] = current[0].with_ticket(ticket)
            try:
                self.ledger.save(current[0])
            except OSError as exc:
                raise StateDirError(
                    f"{state_dir_problem(exc, self.ledger.directory)}; ending the session rather than risk leaving "
                    "it open"
                ) from None

        self._active.add(record.id)
        self._idle.clear()
        asked = time.monotonic()
        try:
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
            started = BrokerSession(grant=grant, record=current[0])
            if (stopped := self._abandoned.get(record.id)) is not None:
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    when = f"{now - deadline:.1f} s after the connect deadline"
                else:
                    when = f"{now - stopped:.1f} s after the session was torn down"
                log.warning(
                    "session %s: the broker's start answer came %s, when the kiosk had stopped waiting; ending room %s",
                    record.id,
                    when,
                    grant.room,
                )
                await self._finish(started.record)
            return started
        finally:
            self._starts.pop(record.id, None)
            self._abandoned.pop(record.id, None)

    async def end(self, session: BrokerSession, *, timeout_s: float | None = None) -> bool:
        """End ``session`` at the broker; True if confirmed now, False if handed to the background retries.

        ``timeout_s`` bounds this first attempt (default ``broker.timeout_s``): a session that ended because the
        network was lost tries briefly and leaves the rest to the retries, so the kiosk is ready for the next visitor.
        """
        return await self._finish(session.record, timeout_s=timeout_s)

    async def recover(self) -> int:
        """End every session left recorded by an earlier run; return how many were confirmed ended now.

        First says (once, as an error naming the fix) when the state directory cannot take new records: every
        press would then fail as ``state_dir``.
        """
        problem = await asyncio.to_thread(self.ledger.problem)
        if problem is not None:
            log.error("%s; until then every session start is refused", problem)
        records = [
            record
            for record in self.ledger.pending()
            if record.id not in self._active and not self._retries.covers(record.id)
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
                self._retries.schedule(record)
        return sum(results)

    async def aclose(self, *, wait_starts_s: float = 0.0) -> None:
        """Stop background retries and detached ends (their records stay on disk for the next start).

        Starts still under way are first given ``wait_starts_s`` (s) to answer, so that a session they open is
        ended now rather than at the next start (or, its room never learned, not at all).
        """
        starts = [task for task in self._starts.values() if not task.done()]
        if starts and wait_starts_s > 0:
            log.info("waiting up to %.1f s for %d broker start(s) still under way", wait_starts_s, len(starts))
            _, late = await asyncio.wait(starts, timeout=wait_starts_s)
            if late:
                log.warning(
                    "%d broker start(s) did not answer within %.1f s of stopping; their records stay for the next "
                    "start (a session whose room was never learned cannot be ended from here)",
                    len(late),
                    wait_starts_s,
                )
        # The starts first: a cancelled one may still hand its end to the background or detach it.
        await _cancel_all(list(self._starts.values()))
        await asyncio.gather(self._retries.aclose(), _cancel_all(list(self._detached)))

    async def _finish(self, record: LedgerEntry, *, timeout_s: float | None = None) -> bool:
        try:
            ending = asyncio.ensure_future(self._end_once(record, timeout_s=timeout_s))
            try:
                ended = await asyncio.shield(ending)
            except asyncio.CancelledError:
                # Cancelled again while ending: let the end run on, then retry it if it failed.
                self._detached.add(ending)
                ending.add_done_callback(lambda task: self._after_detached_end(record, task))
                raise
            if not ended:
                self._retries.schedule(record)
            return ended
        finally:
            self._release(record.id)

    def _release(self, record_id: str) -> None:
        self._active.discard(record_id)
        if not self._active:
            self._idle.set()

    def _after_detached_end(self, record: LedgerEntry, task: asyncio.Future[bool]) -> None:
        self._detached.discard(task)
        if task.cancelled() or task.exception() is not None or not task.result():
            self._retries.schedule(record)

    async def _end_once(self, record: LedgerEntry, *, timeout_s: float | None = None) -> bool:
        """One attempt to end ``record``'s session, bounded to ``timeout_s`` (default ``broker.timeout_s``).

        True once the record could be removed.
        """
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
        budget = self._end_timeout_s if timeout_s is None else min(timeout_s, self._end_timeout_s)
        try:
            async with asyncio.timeout(budget + 1.0):
                await self.broker.end(ticket, deadline=started + budget)
        except Exception as exc:
            # Supervisor boundary of one end attempt: whatever failed, the record stays and the end is retried. The
            # first failure of a session's end is a warning; the retries through an outage are logged at debug.
            self._report("end", started, ok=False)
            if record.id in self._failed_once:
                log.debug("ending room %s failed again; will retry", ticket.room, exc_info=True)
            else:
                self._failed_once.add(record.id)
                log.warning("ending room %s failed (%s); retrying in the background", ticket.room, exc)
                log.debug("the end of room %s failed", ticket.room, exc_info=True)
            return False
        self._report("end", started, ok=True)
        self._failed_once.discard(record.id)
        self.ledger.remove(record.id)
        log.info("session %s ended (room %s) in %.0f ms", record.id, ticket.room, (time.monotonic() - started) * 1e3)
        return True
