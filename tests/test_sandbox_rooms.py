"""The sandbox as a room server: two humans hear each other, data reaches its destinations, broker end hangs up."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import numpy as np
import pytest
from livekit import rtc

from tests.fixtures.sandbox import RATE, SandboxHandle, speak, visitor_speech
from tests.fixtures.waiting import until


@pytest.fixture
async def duo(sandbox: SandboxHandle) -> AsyncIterator[tuple[rtc.Room, rtc.Room]]:
    """Alice and Bob in a fresh room with no agent."""
    name = f"duo-{secrets.token_hex(3)}"
    alice, bob = rtc.Room(), rtc.Room()
    async with asyncio.timeout(10):
        await alice.connect(sandbox.ws_url, sandbox.mint_token("alice", name))
        await bob.connect(sandbox.ws_url, sandbox.mint_token("bob", name))
    yield alice, bob
    async with asyncio.timeout(5):
        await asyncio.gather(alice.disconnect(), bob.disconnect())


async def _loudest_from(room: rtc.Room, speaker: str, seconds: float) -> int:
    """Subscribe to ``speaker``'s first audio track in ``room`` and return its peak over ``seconds``."""

    def tracks() -> list[rtc.Track]:
        return [
            pub.track
            for p in room.remote_participants.values()
            if p.identity == speaker
            for pub in p.track_publications.values()
            if pub.track is not None
        ]

    await until(tracks, 5, "the speaker's track")
    peak = 0
    with_deadline = asyncio.get_running_loop().time() + seconds
    async with asyncio.timeout(seconds + 2):
        async for event in rtc.AudioStream(tracks()[0], sample_rate=RATE, num_channels=1):
            peak = max(peak, int(np.abs(np.frombuffer(bytes(event.frame.data), np.int16)).max()))
            if asyncio.get_running_loop().time() > with_deadline:
                break
    return peak


async def _publish(room: rtc.Room) -> rtc.AudioSource:
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    async with asyncio.timeout(5):
        await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
    return source


async def test_two_humans_hear_each_other(duo: tuple[rtc.Room, rtc.Room]) -> None:
    """Each participant's microphone (published after both joined) reaches the other."""
    alice, bob = duo
    alice_mic, bob_mic = await _publish(alice), await _publish(bob)
    speech = visitor_speech()
    talk = asyncio.gather(speak(alice_mic, speech), speak(bob_mic, speech))
    bob_hears, alice_hears = await asyncio.gather(_loudest_from(bob, "alice", 2.5), _loudest_from(alice, "bob", 2.5))
    async with asyncio.timeout(10):
        await talk
    assert bob_hears > 3000
    assert alice_hears > 3000


async def test_data_respects_destinations_and_streams_pass(
    sandbox: SandboxHandle, duo: tuple[rtc.Room, rtc.Room]
) -> None:
    """Packets for named destinations reach only them; text streams are forwarded whole."""
    alice, bob = duo
    carol = rtc.Room()
    room_name = next(iter([alice.name]))
    async with asyncio.timeout(10):
        await carol.connect(sandbox.ws_url, sandbox.mint_token("carol", room_name))
    got: dict[str, list[bytes]] = {"bob": [], "carol": []}
    bob.on("data_received", lambda p: got["bob"].append(p.data))
    carol.on("data_received", lambda p: got["carol"].append(p.data))
    texts: list[str] = []

    async def read_text(reader: rtc.TextStreamReader) -> None:
        texts.append(await reader.read_all())

    tasks: set[asyncio.Task[None]] = set()
    bob.register_text_stream_handler("chat", lambda reader, _who: tasks.add(asyncio.create_task(read_text(reader))))
    try:
        async with asyncio.timeout(5):
            await alice.local_participant.publish_data(b"for bob", topic="t", destination_identities=["bob"])
            await alice.local_participant.publish_data(b"for all", topic="t")
            await alice.local_participant.send_text("a longer line " * 400, topic="chat")
        await until(
            lambda: len(got["carol"]) >= 1 and len(got["bob"]) >= 2 and bool(texts), 5, "the data packets and the text"
        )
        assert got["bob"] == [b"for bob", b"for all"]
        assert got["carol"] == [b"for all"]
        assert texts == ["a longer line " * 400]
    finally:
        async with asyncio.timeout(5):
            await carol.disconnect()


async def test_broker_end_disconnects_everyone(sandbox: SandboxHandle) -> None:
    """Ending a Lyzr session closes its room: the visitor and a second human are sent away, rejoining fails."""
    async with asyncio.timeout(5):
        start = (await sandbox.post("/v1/sessions/start", {"agentId": "sandbox-agent"})).json()
    visitor, guest = rtc.Room(), rtc.Room()
    gone = {"visitor": asyncio.Event(), "guest": asyncio.Event()}
    visitor.on("disconnected", lambda *_: gone["visitor"].set())
    guest.on("disconnected", lambda *_: gone["guest"].set())
    async with asyncio.timeout(10):
        await visitor.connect(start["livekitUrl"], start["userToken"])
        await guest.connect(sandbox.ws_url, sandbox.mint_token("guest", start["roomName"]))
    agent = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    await until(lambda: any(p.kind == agent for p in visitor.remote_participants.values()), 5, "the agent to join")
    async with asyncio.timeout(5):
        ended = await sandbox.post("/v1/sessions/end", {"roomName": start["roomName"]})
        await asyncio.gather(gone["visitor"].wait(), gone["guest"].wait())
    assert ended.status_code == 200
    assert not visitor.isconnected() and not guest.isconnected()
    record = await sandbox.wait_session(start["roomName"], lambda r: r["ended_at"] is not None)
    assert record["end_reason"] == "broker_end"
    with pytest.raises(rtc.ConnectError, match="closed"):
        async with asyncio.timeout(10):
            await rtc.Room().connect(start["livekitUrl"], start["userToken"])
