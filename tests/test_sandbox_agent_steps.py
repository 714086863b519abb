"""The scripted agent keeps the call when one step of a turn runs over its bound, as a livekit-agents session does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kiosk_sandbox.agent import ScriptedAgent, StepTimeout, bounded
from kiosk_sandbox.sessions import SessionRecord


def _agent(tmp_path: Path) -> tuple[ScriptedAgent, list[str]]:
    record = SessionRecord(id="SE_t", dialect="lyzr", identity="kiosk", room="r", agent_name="a", overrides={})
    agent = ScriptedAgent(url="ws://127.0.0.1:1", token="unused", record=record, state_dir=tmp_path)
    states: list[str] = []

    async def set_state(state: str) -> None:
        states.append(state)

    agent._set_state = set_state  # type: ignore[method-assign]
    return agent, states


async def test_a_step_over_its_bound_is_named_and_the_conversation_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A step that times out is logged by name, the agent says it listens again, and nothing is raised."""
    agent, states = _agent(tmp_path)
    async with agent._carry_on("a turn"), bounded("closing its transcription", 0.01):
        await asyncio.sleep(1)
    assert states == ["listening"]
    assert "closing its transcription took over 0.0 s; going on" in caplog.text


async def test_other_failures_still_end_the_conversation(tmp_path: Path) -> None:
    """Only a step's own timeout is carried on past; any other error (a bare TimeoutError included) ends it."""
    agent, states = _agent(tmp_path)
    with pytest.raises(TimeoutError) as caught:
        async with agent._carry_on("a turn"):
            raise TimeoutError
    assert not isinstance(caught.value, StepTimeout) and states == []
