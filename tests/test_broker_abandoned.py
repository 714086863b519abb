"""Starts the kiosk stops waiting for: the request goes on, the room is recorded first, the session is ended.

A scripted broker whose answer is held back by an event stands in for the slow vendor (the process-level cases are
in :mod:`tests.test_broker_leaks`); the ledger is the real one on disk.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kiosk.broker import ConnectionDetails, EndTicket, OnRoom, SessionKeeper, SessionLedger
from kiosk.errors import BrokerError
from kiosk.reasons import FailureReason
from tests.fixtures.broker import ScriptedBroker
from tests.fixtures.waiting import until


class HeldBroker(ScriptedBroker):
    """Names the room and answers only once :attr:`answer` is set."""

    def __init__(self, ledger: SessionLedger) -> None:
        super().__init__(ledger)
        self.answer = asyncio.Event()
        self.asked = asyncio.Event()

    async def start(self, *, deadline: float | None = None, on_room: OnRoom | None = None) -> ConnectionDetails:
        """Wait for :attr:`answer`, then name the room and grant."""
        self.asked.set()
        await self.answer.wait()
        return await super().start(deadline=deadline, on_room=on_room)


def held(tmp_path: Path) -> tuple[SessionKeeper, HeldBroker, SessionLedger]:
    """A keeper over a held broker and a real ledger."""
    ledger = SessionLedger(tmp_path)
    broker = HeldBroker(ledger)
    keeper = SessionKeeper(broker=broker, ledger=ledger, end_timeout_s=1.0, end_retry_max_s=0.2, first_retry_s=0.05)
    return keeper, broker, ledger


async def test_a_start_past_its_deadline_fails_as_timeout_and_its_late_session_is_ended(tmp_path: Path) -> None:
    """At the deadline the caller gets broker_timeout; the answer that comes later is recorded, then ended."""
    keeper, broker, ledger = held(tmp_path)
    async with asyncio.timeout(5):
        with pytest.raises(BrokerError) as caught:
            await keeper.start(deadline=time.monotonic() + 0.5)
    assert caught.value.reason == FailureReason.BROKER_TIMEOUT
    assert keeper.starting == 1 and len(ledger.pending()) == 1
    broker.answer.set()
    await until(lambda: broker.ended == ["room-0"], 5, "the late session to be ended", step=0.01)
    assert ledger.pending() == [] and keeper.starting == 0
    await keeper.aclose()


async def test_a_cancelled_caller_leaves_the_start_running_and_it_is_ended(tmp_path: Path) -> None:
    """A teardown cancels the waiting caller, never the request: the session it opens is ended."""
    keeper, broker, ledger = held(tmp_path)
    waiting = asyncio.ensure_future(keeper.start(deadline=time.monotonic() + 30))
    async with asyncio.timeout(5):
        await broker.asked.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert keeper.starting == 1
    broker.answer.set()
    await until(lambda: broker.ended == ["room-0"], 5, "the late session to be ended", step=0.01)
    assert ledger.pending() == []
    await keeper.aclose()


async def test_the_room_is_on_disk_before_the_end_is_sent(tmp_path: Path) -> None:
    """A crash between the late answer and its end still leaves a record with the room for the next start."""
    keeper, broker, ledger = held(tmp_path)
    rooms_on_disk: list[str | None] = []

    async def end(session: ConnectionDetails | EndTicket, *, deadline: float | None = None) -> None:
        rooms_on_disk.extend(record.room for record in ledger.pending())
        broker.ended.append("room-0")

    broker.end = end  # type: ignore[method-assign]
    with pytest.raises(BrokerError):
        await keeper.start(deadline=time.monotonic() + 0.5)
    broker.answer.set()
    await until(lambda: broker.ended, 5, "the late session to be ended", step=0.01)
    assert rooms_on_disk == ["room-0"]
    await keeper.aclose()


async def test_aclose_waits_for_a_start_under_way_and_ends_it(tmp_path: Path) -> None:
    """Shutdown gives an abandoned start its budget: the answer within it is ended before aclose returns."""
    keeper, broker, ledger = held(tmp_path)
    with pytest.raises(BrokerError):
        await keeper.start(deadline=time.monotonic() + 0.5)
    asyncio.get_running_loop().call_later(0.2, broker.answer.set)
    async with asyncio.timeout(5):
        await keeper.aclose(wait_starts_s=3.0)
    assert broker.ended == ["room-0"] and ledger.pending() == []


async def test_aclose_gives_up_on_a_start_past_its_budget_keeping_the_record(tmp_path: Path) -> None:
    """A start that does not answer within the stop budget is cancelled, named in the log, and nothing is ended."""
    keeper, broker, ledger = held(tmp_path)
    with pytest.raises(BrokerError):
        await keeper.start(deadline=time.monotonic() + 0.5)
    async with asyncio.timeout(5):
        await keeper.aclose(wait_starts_s=0.1)
    assert broker.ended == [] and keeper.starting == 0
    # Its room was never learned: there is nothing a later start could end either (Lyzr's own timeout ends it).
    assert ledger.pending() == []
