"""The session records and the guard: every started session is ended on every path, or recorded for later."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.broker import ConnectionDetails, EndTicket, LedgerEntry, SessionKeeper, SessionLedger
from kiosk.broker.end_retries import PROMPT_ATTEMPT_S
from kiosk.errors import BrokerError, ClockError, StateDirError
from kiosk.reasons import FailureReason
from tests.fixtures.broker import ScriptedBroker, keeper_session
from tests.fixtures.waiting import until


def keeper_for(tmp_path: Path, **kwargs: object) -> tuple[SessionKeeper, ScriptedBroker]:
    """A keeper over a scripted broker with fast retries."""
    ledger = SessionLedger(tmp_path)
    broker = ScriptedBroker(ledger, **kwargs)  # type: ignore[arg-type]
    keeper = SessionKeeper(broker=broker, ledger=ledger, end_timeout_s=1.0, end_retry_max_s=0.2, first_retry_s=0.05)
    return keeper, broker


async def test_record_is_written_before_start_private_and_without_secrets(tmp_path: Path) -> None:
    """The record exists before the start is sent, is 0600 in a 0700 dir, and holds no token."""
    keeper, broker = keeper_for(tmp_path)
    async with asyncio.timeout(5), keeper_session(keeper) as grant:
        [path] = list((tmp_path / "sessions").glob("*.json"))
        text = path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert grant.room in text and "eyJ" not in text and "token" not in text
    assert broker.records_at_start == [1]
    assert broker.ended == [grant.room]
    assert SessionLedger(tmp_path).pending() == []


async def test_exception_in_the_session_still_ends_it(tmp_path: Path) -> None:
    """An exception inside the session ends it at the broker and propagates."""
    keeper, broker = keeper_for(tmp_path)
    async with asyncio.timeout(5):
        with pytest.raises(RuntimeError, match="boom"):
            async with keeper_session(keeper):
                raise RuntimeError("boom")
    assert broker.ended == ["room-0"] and keeper.ledger.pending() == []


async def test_cancellation_still_ends_the_session(tmp_path: Path) -> None:
    """Cancelling the session task (SIGTERM) ends the session at the broker."""
    keeper, broker = keeper_for(tmp_path)
    live = asyncio.Event()

    async def visitor() -> None:
        async with keeper_session(keeper):
            live.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(visitor())
    async with asyncio.timeout(5):
        await live.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert broker.ended == ["room-0"] and keeper.ledger.pending() == []


async def test_second_cancel_during_the_end_lets_the_end_finish(tmp_path: Path) -> None:
    """Cancelled again while ending, the end still runs to completion and the record is removed."""
    keeper, broker = keeper_for(tmp_path)
    broker.end_gate = asyncio.Event()
    async with asyncio.timeout(5):
        started = await keeper.start()
        ending = asyncio.create_task(keeper.end(started))
        await broker.end_asked.wait()
        ending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ending
        broker.end_gate.set()
        await until(lambda: not keeper.ledger.pending(), 5, "the ledger to empty", step=0.02)
    assert broker.ended == ["room-0"]


async def test_failure_after_the_room_is_known_ends_it(tmp_path: Path) -> None:
    """A start that fails after the broker named the room (e.g. a clock problem) is ended, then raised."""
    keeper, broker = keeper_for(tmp_path, fail_start=ClockError("clock"))
    async with asyncio.timeout(5):
        with pytest.raises(ClockError):
            await keeper.start()
    assert broker.ended == ["room-0"] and keeper.ledger.pending() == []


async def test_lost_start_answer_leaves_nothing_to_end(tmp_path: Path) -> None:
    """A start whose answer never came (no room) is forgotten: there is nothing the kiosk can end."""
    keeper, broker = keeper_for(tmp_path, fail_start=BrokerError("t", reason=FailureReason.BROKER_TIMEOUT))
    broker.room_known = False
    async with asyncio.timeout(5):
        with pytest.raises(BrokerError):
            await keeper.start()
    assert broker.ended == [] and keeper.ledger.pending() == []


async def test_failed_end_is_retried_in_the_background_without_blocking(tmp_path: Path) -> None:
    """An end that fails keeps its record, is retried while idle, and the next visitor starts at once."""
    keeper, broker = keeper_for(tmp_path)
    broker.end_failures = 2
    calls: list[tuple[str, bool]] = []
    keeper.on_call = lambda operation, seconds, ok: calls.append((operation, ok))
    async with asyncio.timeout(5):
        async with keeper_session(keeper):
            pass
        assert len(keeper.ledger.pending()) == 1 and keeper.retrying == 1
        assert keeper.oldest_pending_start() == keeper.ledger.pending()[0].started_at
        async with keeper_session(keeper) as second:
            assert second.room == "room-0"
        await until(lambda: not keeper.ledger.pending(), 5, "the ledger to empty", step=0.02)
    assert len(broker.ended) == 2
    assert keeper.retrying == 0 and keeper.oldest_pending_start() is None
    assert calls[:2] == [("start", True), ("end", False)] and calls.count(("end", True)) == 2
    await asyncio.wait_for(keeper.aclose(), 5)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(done.stdout)


async def test_recover_ends_every_orphan(tmp_path: Path, dead_pid: int) -> None:
    """Records left by a dead process are ended; a record without a room is forgotten."""
    earlier = SessionLedger(tmp_path)
    first = earlier.begin(dialect="lyzr", url="https://broker.test", identity="kiosk-t1")
    earlier.save(
        first.with_ticket(EndTicket(dialect="lyzr", url="https://broker.test", room="orphan", identity="kiosk-t1"))
    )
    earlier.begin(dialect="lyzr", url="https://broker.test", identity="kiosk-t1")
    for path in (tmp_path / "sessions").glob("*.json"):
        path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {dead_pid}'))
    keeper, broker = keeper_for(tmp_path)
    async with asyncio.timeout(5):
        assert await keeper.recover() == 2
    assert broker.ended == ["orphan"] and keeper.ledger.pending() == []


async def test_recover_leaves_a_live_processs_session_alone(tmp_path: Path) -> None:
    """A record whose process still runs (e.g. a concurrent ``kiosk doctor``) is not ended."""
    SessionLedger(tmp_path).begin(dialect="lyzr", url="https://broker.test", identity="kiosk-t1")
    for path in (tmp_path / "sessions").glob("*.json"):
        path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {os.getppid()}'))
    keeper, broker = keeper_for(tmp_path)
    async with asyncio.timeout(5):
        assert await keeper.recover() == 0
    assert len(keeper.ledger.pending()) == 1 and broker.ended == []


async def test_unwritable_state_dir_refuses_to_start(tmp_path: Path) -> None:
    """Without a place for the record no session starts (it could never be recovered): failure ``state_dir``."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    keeper, broker = keeper_for(blocker)
    async with asyncio.timeout(5):
        with pytest.raises(StateDirError, match=r"daemon\.state_dir") as caught:
            await keeper.start()
    assert caught.value.reason == FailureReason.STATE_DIR
    assert broker.records_at_start == []


class FullDiskLedger(SessionLedger):
    """A ledger whose disk fills up after the first write."""

    def save(self, record: LedgerEntry) -> None:
        """Refuse to record the room."""
        if record.room is not None:
            raise OSError(28, "No space left on device")
        super().save(record)


async def test_record_update_failure_still_ends_the_session(tmp_path: Path) -> None:
    """If the room cannot be written down, the session is ended at once and the start fails as ``state_dir``."""
    ledger = FullDiskLedger(tmp_path)
    broker = ScriptedBroker(ledger)
    keeper = SessionKeeper(broker=broker, ledger=ledger, end_timeout_s=1.0, end_retry_max_s=0.2)
    async with asyncio.timeout(5):
        with pytest.raises(StateDirError) as caught:
            await keeper.start()
    assert caught.value.reason == FailureReason.STATE_DIR and "is full (No space left" in str(caught.value)
    assert broker.ended == ["room-0"] and ledger.pending() == []


def test_corrupt_record_is_set_aside(tmp_path: Path) -> None:
    """An unreadable record is renamed ``.bad`` rather than blocking every start."""
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "x.json").write_text("{not json")
    assert SessionLedger(tmp_path).pending() == []
    assert (tmp_path / "sessions" / "x.bad").exists()


async def test_end_retries_give_up_after_a_bound_naming_the_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that never confirms the end: the retries stop after end_give_up_s with one warning naming it."""
    ledger = SessionLedger(tmp_path)
    broker = ScriptedBroker(ledger)
    broker.end_failures = 10**9
    keeper = SessionKeeper(
        broker=broker, ledger=ledger, end_timeout_s=1.0, end_retry_max_s=0.05, first_retry_s=0.01, end_give_up_s=0.3
    )
    async with asyncio.timeout(10):
        async with keeper_session(keeper):
            pass
        await until(lambda: keeper.retrying == 0, 5, "the retries to stop", step=0.02)
    [warning] = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert "room-0" in warning.getMessage() and warning.levelname == "WARNING"
    assert len(keeper.ledger.pending()) == 1, "the record stays, so the next start tries again"
    await asyncio.wait_for(keeper.aclose(), 5)


@pytest.mark.parametrize("reason", [FailureReason.BROKER_UNAUTHORIZED, FailureReason.BROKER_ERROR])
async def test_a_start_the_broker_refused_leaves_no_record_and_no_warning(
    tmp_path: Path, reason: FailureReason, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 or 503 answer opened nothing: the record goes quietly, without 'the answer never arrived'."""
    keeper, broker = keeper_for(tmp_path, fail_start=BrokerError("refused", reason=reason))
    broker.room_known = False
    async with asyncio.timeout(5):
        with pytest.raises(BrokerError):
            await keeper.start()
    assert keeper.ledger.pending() == [] and broker.ended == []
    assert "never arrived" not in caplog.text


async def test_an_end_retried_after_an_outage_uses_short_attempts_so_it_lands_soon_after_the_link_returns(
    tmp_path: Path,
) -> None:
    """Ends retried in the first two minutes are bounded to PROMPT_ATTEMPT_S each: one sent into an outage is given up
    quickly and a fresh one follows, so a paid session ends within seconds of the broker being reachable again."""
    ledger = SessionLedger(tmp_path)
    broker = ScriptedBroker(ledger)
    keeper = SessionKeeper(broker=broker, ledger=ledger, end_timeout_s=3.5, end_retry_max_s=300.0, first_retry_s=0.01)
    budgets: list[float] = []
    back = asyncio.Event()
    answer = broker.end

    async def end(session: ConnectionDetails | EndTicket, *, deadline: float | None = None) -> None:
        assert deadline is not None
        budgets.append(deadline - asyncio.get_running_loop().time())
        if not back.is_set():
            await asyncio.Event().wait()  # sent into the outage: never answered
        await answer(session, deadline=deadline)

    broker.end = end  # type: ignore[method-assign]
    async with asyncio.timeout(30):
        started = await keeper.start()
        assert not await keeper.end(started)  # the first attempt, with the whole broker.timeout_s, is lost
        await until(lambda: len(budgets) >= 2, 10, "a second end attempt", step=0.02)
        back.set()
        await until(lambda: not ledger.pending(), 10, "the ledger to empty", step=0.02)
    assert budgets[0] > PROMPT_ATTEMPT_S
    assert all(budget <= PROMPT_ATTEMPT_S for budget in budgets[1:]), budgets
    await keeper.aclose()
