"""The session run's lifecycle: one enum, one pure transition function, and the named step timeouts.

The run (:class:`kiosk.daemon.sessionrun.SessionRun`) is the only writer of its phase. Who may interrupt it follows
from the phase alone: a teardown from outside (button, shutdown, the agent leaving) cancels the run only while it
waits on a step (``STARTING``, ``JOINING``, ``LIVE``); once the run settled its own end or is closing, nothing
cancels it, so its broker end and room close always run to completion.

::

    READY --execute--> STARTING --granted--> JOINING --connected--> LIVE
      |                   |                     |                     |
      +---teardown--------+------teardown-------+------teardown-------+--> TORN_DOWN --close--> CLOSING --> CLOSED
                          +------settle---------+------settle---------+--> SETTLED ----close--> CLOSING

(The model: aioesphomeapi's reconnect logic, one connection-state enum with a single writer.)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator

from kiosk.errors import KioskError
from kiosk.reasons import FailureReason


class Phase(enum.StrEnum):
    """Where a session run is."""

    READY = "ready"  # created; execute() has not begun
    STARTING = "starting"  # the broker start is under way
    JOINING = "joining"  # the room connect is under way
    LIVE = "live"  # in the room: agent join, first words, conversation
    TORN_DOWN = "torn_down"  # a teardown from outside interrupted the run
    SETTLED = "settled"  # the run decided its own end (silence, failure...): nothing cancels it now
    CLOSING = "closing"  # releasing the room and ending the broker session
    CLOSED = "closed"


class Step(enum.StrEnum):
    """What happens to a run's phase."""

    EXECUTE = "execute"
    GRANTED = "granted"
    CONNECTED = "connected"
    TEARDOWN = "teardown"
    SETTLE = "settle"
    CLOSE = "close"
    CLOSED = "closed"


WAITING = frozenset({Phase.STARTING, Phase.JOINING, Phase.LIVE})

_TABLE: dict[tuple[Phase, Step], Phase] = {
    (Phase.READY, Step.EXECUTE): Phase.STARTING,
    (Phase.READY, Step.TEARDOWN): Phase.TORN_DOWN,
    (Phase.STARTING, Step.GRANTED): Phase.JOINING,
    (Phase.JOINING, Step.CONNECTED): Phase.LIVE,
    (Phase.TORN_DOWN, Step.EXECUTE): Phase.TORN_DOWN,  # torn down before the task ran: straight to closing
    (Phase.TORN_DOWN, Step.TEARDOWN): Phase.TORN_DOWN,
    (Phase.TORN_DOWN, Step.SETTLE): Phase.TORN_DOWN,  # a failure noticed while tearing down is not reported
    (Phase.TORN_DOWN, Step.CLOSE): Phase.CLOSING,
    (Phase.SETTLED, Step.TEARDOWN): Phase.SETTLED,
    (Phase.SETTLED, Step.SETTLE): Phase.SETTLED,
    (Phase.SETTLED, Step.CLOSE): Phase.CLOSING,
    (Phase.CLOSING, Step.TEARDOWN): Phase.CLOSING,
    (Phase.CLOSING, Step.CLOSED): Phase.CLOSED,
    (Phase.CLOSED, Step.TEARDOWN): Phase.CLOSED,
}
for _phase in WAITING:
    _TABLE[(_phase, Step.TEARDOWN)] = Phase.TORN_DOWN
    _TABLE[(_phase, Step.SETTLE)] = Phase.SETTLED
    _TABLE[(_phase, Step.CLOSE)] = Phase.CLOSING  # an exception the run did not name: close all the same


def advance(phase: Phase, step: Step) -> Phase:
    """The phase after ``step``; raises ``ValueError`` for a step that cannot happen in ``phase`` (a bug)."""
    try:
        return _TABLE[(phase, step)]
    except KeyError:
        raise ValueError(f"a session run cannot {step} while {phase}") from None


class StepTimeout(KioskError, TimeoutError):
    """One named step of a session took too long; ``reason`` says which (broker start, room connect...)."""


@contextlib.asynccontextmanager
async def timed(what: str, seconds: float, reason: FailureReason) -> AsyncIterator[None]:
    """Bound the block to ``seconds``; a timeout inside becomes :class:`StepTimeout` naming ``what``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except StepTimeout:
        raise
    except TimeoutError as exc:
        raise StepTimeout(f"{what} timed out after {seconds:.1f} s", reason=reason) from exc


#: A bare ``TimeoutError`` (from a step not wrapped in :func:`timed`) is named by the phase it happened in.
PHASE_TIMEOUT: dict[Phase, FailureReason] = {
    Phase.STARTING: FailureReason.BROKER_TIMEOUT,
    Phase.JOINING: FailureReason.CONNECT_TIMEOUT,
}
