"""The kiosk's room client against the sandbox server, with an agent (and an avatar) driven by the test.

The agent side uses the official SDK the way livekit-agents does: kind agent, ``lk.agent.state``, transcriptions as
``lk.transcription`` text streams (delta streams for its own speech, whole-text interim/final streams for the
visitor's), typed text read from ``lk.chat``; an avatar worker joins as kind agent with ``lk.publish_on_behalf``.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import AsyncIterator

import numpy as np
import pytest
from livekit import api, rtc

from kiosk import session as sm
from kiosk.audio import opus
from kiosk.audio.preroll import PCM_MIME, UPLINK_BUDGET_BITS, PreConnectAudio, encode_for_uplink, for_uplink
from kiosk.daemon.captions import Caption, CaptionBook
from kiosk.daemon.room import _within
from kiosk.reasons import FailureReason
from tests.fixtures.room import Kiosk, participant, token
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until


@pytest.fixture
async def kiosk(sandbox: SandboxHandle) -> AsyncIterator[tuple[Kiosk, str]]:
    """A kiosk connected to a fresh room with no agent dispatched; yields it and the room's name."""
    room = f"room-{secrets.token_hex(4)}"
    k = Kiosk()
    await k.room.connect(sandbox.ws_url, token(sandbox, "kiosk-1", room), budget_s=10)
    try:
        yield k, room
    finally:
        await k.room.close(budget_s=5)


async def test_the_agent_is_not_its_avatar(kiosk: tuple[Kiosk, str], sandbox: SandboxHandle) -> None:
    """An avatar (kind agent, lk.publish_on_behalf) joining first is not taken for the agent."""
    k, room = kiosk
    avatar = participant(sandbox, room, "avatar-1", kind="agent", **{"lk.publish_on_behalf": "agent-1"})
    async with avatar, participant(sandbox, room, "agent-1", kind="agent", **{"lk.agent.state": "listening"}):
        assert await k.room.wait_for_agent(10)
        await until(lambda: k.agent_state == sm.AgentState.LISTENING, 10, "the agent listening", step=0.02)
    assert sum(isinstance(e, sm.AgentJoined) for e in k.events) == 1


async def test_silence_counts_from_when_the_agent_stopped_thinking(
    kiosk: tuple[Kiosk, str], sandbox: SandboxHandle
) -> None:
    """Leaving thinking or speaking is remembered, so a long think does not end the session right after."""
    k, room = kiosk
    async with participant(sandbox, room, "agent-1", kind="agent", **{"lk.agent.state": "listening"}) as agent:
        assert await k.room.wait_for_agent(10)
        assert k.room.activity.last_busy == 0.0
        for state in ("thinking", "listening"):
            async with asyncio.timeout(5):
                await agent.local_participant.set_attributes({"lk.agent.state": state})
            await until(
                lambda s=state: k.agent_state == sm.AgentState.parse(s),  # type: ignore[misc]
                10,
                f"agent state {state}",
                step=0.02,
            )
        assert k.room.activity.last_busy > 0.0


async def test_captions_from_transcription_streams_and_typed_text_on_lk_chat(
    kiosk: tuple[Kiosk, str], sandbox: SandboxHandle
) -> None:
    """Interim updates replace, finals commit; the visitor is the segment naming the kiosk's mic; lk.chat carries text."""
    k, room = kiosk
    mic = next(iter(k.room.room.local_participant.track_publications))
    async with participant(sandbox, room, "agent-1", kind="agent") as agent:
        typed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def read_chat(reader: rtc.TextStreamReader) -> None:
            typed.set_result(await reader.read_all())

        agent.register_text_stream_handler("lk.chat", lambda reader, _who: asyncio.ensure_future(read_chat(reader)))
        assert await k.room.wait_for_agent(10)
        lp = agent.local_participant
        async with asyncio.timeout(10):
            for text, final in (("where is", "false"), ("Where is the lift?", "true")):
                attributes = {"lk.segment_id": "SG_v", "lk.transcribed_track_id": mic, "lk.transcription_final": final}
                await lp.send_text(text, topic="lk.transcription", attributes=attributes)
            writer = await lp.stream_text(
                topic="lk.transcription", attributes={"lk.segment_id": "SG_a", "lk.transcription_final": "false"}
            )
            for word in ("It is", " on the left."):
                await writer.write(word)
            await writer.aclose(attributes={"lk.transcription_final": "true"})
            await k.room.say("thanks")
            assert await typed == "thanks"
        await until(
            lambda: any(c.segment_id == "SG_a" and c.final for c in k.captions), 10, "the final caption SG_a", step=0.02
        )
    visitor = [c for c in k.captions if c.segment_id == "SG_v"]
    assert [(c.text, c.final, c.role) for c in visitor] == [
        ("where is", False, "visitor"),
        ("Where is the lift?", True, "visitor"),
    ]
    agent_lines = [(c.text, c.final, c.role) for c in k.captions if c.segment_id == "SG_a"]
    assert agent_lines[-1] == ("It is on the left.", True, "agent")
    assert all(not final for _, final, _ in agent_lines[:-1])
    assert [c.text for c in k.captions if c.role == "visitor" and c.segment_id.startswith("typed")] == ["thanks"]


def test_caption_book_rules() -> None:
    """Repeats change nothing, nothing follows a final, a typed line's echo is dropped once."""
    seen: list[Caption] = []
    book = CaptionBook(on_caption=seen.append)
    assert book.update(role="agent", text="Hi", segment_id="a", final=False)
    assert book.update(role="agent", text="Hi", segment_id="a", final=False) is None
    assert book.update(role="agent", text="Hi there", segment_id="a", final=True)
    assert book.update(role="agent", text="Hi there again", segment_id="a", final=False) is None
    assert book.typed("Where is the lift?")
    assert book.update(role="visitor", text="where is the  lift?", segment_id="b", final=True) is None
    assert book.update(role="visitor", text="Where is the lift?", segment_id="c", final=True)
    assert [c.text for c in seen] == ["Hi", "Hi there", "Where is the lift?", "Where is the lift?"]


@pytest.mark.parametrize(("seconds", "rate"), [(2.0, 16000), (7.5, 16000), (10.0, 8000), (15.0, 8000)])
def test_first_words_as_pcm_fit_the_agents_window_on_a_1_mbit_uplink(
    seconds: float, rate: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Opus, up to 15 s of first words take at most 2 s of a 1 Mbit/s uplink, at the best rate that fits."""

    def missing() -> None:
        raise opus.OpusUnavailableError("no libsndfile here")

    monkeypatch.setattr(opus, "_soundfile", missing)
    t = np.arange(int(48000 * seconds)) / 48000
    pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    buffer = encode_for_uplink(for_uplink(PreConnectAudio(pcm=pcm.tobytes(), duration_s=seconds)))
    assert buffer.mime_type == PCM_MIME and buffer.sample_rate == rate
    assert buffer.duration_s == pytest.approx(seconds, abs=0.02)
    assert len(buffer.payload) * 8 <= UPLINK_BUDGET_BITS
    assert len(buffer.payload) * 8 / 1_000_000 < 3.0  # seconds on a 1 Mbit/s uplink, inside the agent's 3 s


async def test_the_room_server_dying_is_a_disconnect_not_the_agent_leaving(
    private_sandbox: tuple[SandboxHandle, subprocess.Popen[str]],
) -> None:
    """kill -9 of the server mid-call: the SDK reconnects, gives up, and the session hears network_lost, never the
    agent leaving."""
    server, process = private_sandbox
    room = f"room-{secrets.token_hex(4)}"
    k = Kiosk()
    await k.room.connect(server.ws_url, token(server, "kiosk-1", room), budget_s=10)
    try:
        async with participant(server, room, "agent-1", kind="agent", **{"lk.agent.state": "listening"}):
            assert await k.room.wait_for_agent(10)
            process.kill()
            await until(lambda: any(isinstance(e, sm.Failure) for e in k.events), 90, "a Failure event", step=0.02)
            await asyncio.sleep(0)
    finally:
        await k.room.close(budget_s=5)
    assert not any(isinstance(e, sm.AgentLeft) for e in k.events), k.events
    assert [type(e) for e in k.events if isinstance(e, sm.Reconnecting | sm.Failure)] == [sm.Reconnecting, sm.Failure]
    assert sm.Failure(FailureReason.NETWORK_LOST) in k.events


async def test_a_shutdown_that_arrives_as_the_agent_joins_is_not_lost() -> None:
    """The session's wait for the agent is cancelled in the same moment the agent joins: the cancellation propagates
    (``asyncio.wait_for`` on Python 3.11 returned True instead, and the session ran on after a SIGINT)."""
    joined = asyncio.Event()
    waiting = asyncio.ensure_future(_within(joined, 30))
    await asyncio.sleep(0)
    joined.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


@pytest.mark.parametrize(
    "scenario", [rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT, rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT]
)
async def test_a_reconnect_is_reported_and_the_agent_is_followed_not_lost(
    kiosk: tuple[Kiosk, str], sandbox: SandboxHandle, scenario: int
) -> None:
    """The SDK reconnecting the kiosk (its own simulate_scenario) gives Reconnecting then Reconnected, never the
    agent leaving; after a full reconnect the room follows the agent and the republished microphone."""
    k, room = kiosk
    async with participant(sandbox, room, "agent-1", kind="agent", **{"lk.agent.state": "listening"}) as agent:
        assert await k.room.wait_for_agent(10)
        before = k.room.mic_sid
        async with asyncio.timeout(15):
            await k.room.room.simulate_scenario(scenario)
        await until(lambda: any(isinstance(e, sm.Reconnected) for e in k.events), 30, "a Reconnected event", step=0.02)
        kinds = [type(e) for e in k.events]
        assert kinds.index(sm.Reconnecting) < kinds.index(sm.Reconnected)
        assert k.room.link_up and k.room.reconnects == 1
        # The agent is followed: its state changes still arrive, and it is not reported gone after the reconnect.
        async with asyncio.timeout(5):
            await agent.local_participant.set_attributes({"lk.agent.state": "speaking"})
        await until(lambda: k.agent_state == sm.AgentState.SPEAKING, 10, "the agent speaking", step=0.02)
        await asyncio.sleep(1.0)  # longer than the agent-left confirmation and the after-reconnect check
        mic = k.room.mic_sid
        attributes = {"lk.segment_id": "SG_after", "lk.transcribed_track_id": mic, "lk.transcription_final": "true"}
        async with asyncio.timeout(5):
            await agent.local_participant.send_text(
                "after the reconnect", topic="lk.transcription", attributes=attributes
            )
        await until(lambda: any(c.segment_id == "SG_after" for c in k.captions), 10, "the caption SG_after", step=0.02)
    assert not any(isinstance(e, sm.AgentLeft) for e in k.events), k.events
    assert sum(isinstance(e, sm.AgentJoined) for e in k.events) == 1
    assert [c.role for c in k.captions if c.segment_id == "SG_after"] == ["visitor"]
    if scenario == rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT:
        assert mic != before, "a full reconnect republishes the microphone under a new sid"


@pytest.mark.parametrize(
    ("spoke", "expected"), [(True, sm.AgentEnded()), (False, sm.Failure(FailureReason.ROOM_CLOSED))]
)
async def test_the_room_deleted_is_the_agent_ending_the_call_once_it_spoke(
    kiosk: tuple[Kiosk, str], sandbox: SandboxHandle, spoke: bool, expected: sm.Event
) -> None:
    """RoomService DeleteRoom (livekit-agents' EndCallTool) after the agent spoke is AgentEnded; before, room_closed."""
    k, room = kiosk
    state = "speaking" if spoke else "initializing"
    async with (
        participant(sandbox, room, "agent-1", kind="agent", **{"lk.agent.state": state}),
        api.LiveKitAPI(sandbox.ws_url, sandbox.livekit_api_key, sandbox.livekit_api_secret) as lk,
    ):
        assert await k.room.wait_for_agent(10)
        async with asyncio.timeout(10):
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await until(
            lambda: any(isinstance(e, sm.AgentEnded | sm.Failure | sm.Disconnected) for e in k.events),
            10,
            "the end of the call",
            step=0.02,
        )
    assert [e for e in k.events if isinstance(e, sm.AgentEnded | sm.Failure | sm.Disconnected)] == [expected]


async def test_a_second_participant_with_the_kiosks_identity_is_named(
    kiosk: tuple[Kiosk, str], sandbox: SandboxHandle
) -> None:
    """Another kiosk joining with the same identity removes this one: failure duplicate_identity."""
    k, room = kiosk
    async with participant(sandbox, room, "kiosk-1"):
        await until(lambda: any(isinstance(e, sm.Failure) for e in k.events), 10, "a Failure event", step=0.02)
    assert [e for e in k.events if isinstance(e, sm.Failure)] == [sm.Failure(FailureReason.DUPLICATE_IDENTITY)]
