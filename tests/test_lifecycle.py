"""The session run's lifecycle table and the named step timeouts."""

from __future__ import annotations

import asyncio

import pytest

from kiosk.daemon.lifecycle import PHASE_TIMEOUT, WAITING, Phase, Step, StepTimeout, advance, timed
from kiosk.errors import KioskError
from kiosk.reasons import FailureReason

P, S = Phase, Step

#: Every allowed transition; everything else is a bug and raises.
ALLOWED = {
    (P.READY, S.EXECUTE): P.STARTING,
    (P.READY, S.TEARDOWN): P.TORN_DOWN,
    (P.STARTING, S.GRANTED): P.JOINING,
    (P.JOINING, S.CONNECTED): P.LIVE,
    **{(phase, S.TEARDOWN): P.TORN_DOWN for phase in (P.STARTING, P.JOINING, P.LIVE)},
    **{(phase, S.SETTLE): P.SETTLED for phase in (P.STARTING, P.JOINING, P.LIVE)},
    **{(phase, S.CLOSE): P.CLOSING for phase in (P.STARTING, P.JOINING, P.LIVE, P.TORN_DOWN, P.SETTLED)},
    (P.TORN_DOWN, S.EXECUTE): P.TORN_DOWN,
    (P.TORN_DOWN, S.TEARDOWN): P.TORN_DOWN,
    (P.TORN_DOWN, S.SETTLE): P.TORN_DOWN,
    (P.SETTLED, S.TEARDOWN): P.SETTLED,
    (P.SETTLED, S.SETTLE): P.SETTLED,
    (P.CLOSING, S.TEARDOWN): P.CLOSING,
    (P.CLOSING, S.CLOSED): P.CLOSED,
    (P.CLOSED, S.TEARDOWN): P.CLOSED,
}


@pytest.mark.parametrize(("phase", "step"), [(phase, step) for phase in Phase for step in Step])
def test_the_transition_table(phase: Phase, step: Step) -> None:
    """Each (phase, step) either goes where the table says or raises naming both."""
    if (phase, step) in ALLOWED:
        assert advance(phase, step) == ALLOWED[(phase, step)]
    else:
        with pytest.raises(ValueError, match=f"cannot {step} while {phase}"):
            advance(phase, step)


def test_only_waiting_phases_can_be_interrupted() -> None:
    """A teardown cancels the run only while it waits on a step; settled and closing runs finish their ends."""
    assert {P.STARTING, P.JOINING, P.LIVE} == WAITING
    for phase in (P.SETTLED, P.CLOSING, P.CLOSED):
        assert advance(phase, S.TEARDOWN) == phase


async def test_a_timed_step_names_what_timed_out() -> None:
    """The step's own timeout becomes a StepTimeout with its reason, also a TimeoutError and a KioskError."""
    with pytest.raises(StepTimeout, match=r"sending the first words timed out after 0\.0 s") as caught:
        async with timed("sending the first words", 0.01, FailureReason.FIRST_WORDS_TIMEOUT):
            await asyncio.Event().wait()
    assert caught.value.reason == FailureReason.FIRST_WORDS_TIMEOUT
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, KioskError)


async def test_an_inner_named_timeout_keeps_its_name() -> None:
    """A StepTimeout raised inside another timed step is not renamed by the outer one."""
    with pytest.raises(StepTimeout) as caught:
        async with (
            timed("the session", 5.0, FailureReason.INTERNAL),
            timed("the microphone uplink", 0.01, FailureReason.UPLINK_TIMEOUT),
        ):
            await asyncio.Event().wait()
    assert caught.value.reason == FailureReason.UPLINK_TIMEOUT


def test_bare_timeouts_are_named_by_phase() -> None:
    """A timeout while starting is the broker's; while joining, the room connect's."""
    assert PHASE_TIMEOUT == {P.STARTING: FailureReason.BROKER_TIMEOUT, P.JOINING: FailureReason.CONNECT_TIMEOUT}
