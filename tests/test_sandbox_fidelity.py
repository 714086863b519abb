"""The sandbox relays what livekit-server relays: track features, participant kinds and attributes, data routing."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from livekit import api, rtc
from livekit.protocol import metrics, models
from livekit.rtc._proto.track_pb2 import TF_NO_DTX, TF_PRECONNECT_BUFFER

from kiosk_sandbox.rooms import Room
from kiosk_sandbox.sfu_rules import Sender, route_data
from tests.fixtures.sandbox import RATE, SandboxHandle
from tests.fixtures.waiting import until

_AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


def _agent_token(sandbox: SandboxHandle, identity: str, room: str, attributes: dict[str, str]) -> str:
    return (
        api.AccessToken(sandbox.livekit_api_key, sandbox.livekit_api_secret)
        .with_identity(identity)
        .with_kind("agent")
        .with_attributes(attributes)
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
        .to_jwt()
    )


@pytest.fixture
async def kiosk_and_agent(sandbox: SandboxHandle) -> AsyncIterator[tuple[rtc.Room, rtc.Room, rtc.Room]]:
    """A kiosk, an agent and an avatar worker (kind agent, publishing on behalf of the agent) in a fresh room."""
    name = f"fidelity-{secrets.token_hex(3)}"
    kiosk, agent, avatar = rtc.Room(), rtc.Room(), rtc.Room()
    async with asyncio.timeout(15):
        await kiosk.connect(sandbox.ws_url, sandbox.mint_token("kiosk", name))
        await agent.connect(sandbox.ws_url, _agent_token(sandbox, "agent-1", name, {"lk.agent.state": "initializing"}))
        await avatar.connect(
            sandbox.ws_url, _agent_token(sandbox, "avatar-1", name, {"lk.publish_on_behalf": "agent-1"})
        )
    yield kiosk, agent, avatar
    async with asyncio.timeout(5):
        await asyncio.gather(kiosk.disconnect(), agent.disconnect(), avatar.disconnect())


async def test_track_info_carries_what_the_publisher_asked_for(
    kiosk_and_agent: tuple[rtc.Room, rtc.Room, rtc.Room],
) -> None:
    """A microphone published with a pre-connect buffer and without DTX shows both features, name and source."""
    kiosk, agent, _ = kiosk_and_agent
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("kiosk-mic", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, preconnect_buffer=True, dtx=False)
    async with asyncio.timeout(5):
        published = await kiosk.local_participant.publish_track(track, options)

    def seen() -> list[rtc.RemoteTrackPublication]:
        remote = agent.remote_participants.get("kiosk")
        return list(remote.track_publications.values()) if remote else []

    await until(seen, 5, "the published track")
    publication = seen()[0]
    assert publication.sid == published.sid
    assert publication.name == "kiosk-mic"
    assert publication.source == rtc.TrackSource.SOURCE_MICROPHONE
    assert publication.mime_type == "audio/opus"
    features = set(publication.audio_features)
    assert TF_PRECONNECT_BUFFER in features
    assert TF_NO_DTX in features
    async with asyncio.timeout(5):
        await source.aclose()


async def test_kinds_and_attributes_reach_the_others(kiosk_and_agent: tuple[rtc.Room, rtc.Room, rtc.Room]) -> None:
    """Agents are of kind agent with their token's attributes; attribute updates reach the others as they happen."""
    kiosk, agent, _ = kiosk_and_agent
    await until(lambda: {"agent-1", "avatar-1"} <= set(kiosk.remote_participants), 5, "the agent and the avatar")
    seen_agent, seen_avatar = kiosk.remote_participants["agent-1"], kiosk.remote_participants["avatar-1"]
    assert seen_agent.kind == _AGENT and seen_avatar.kind == _AGENT
    assert seen_avatar.attributes["lk.publish_on_behalf"] == "agent-1"
    assert seen_agent.attributes["lk.agent.state"] == "initializing"
    assert agent.remote_participants["kiosk"].kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    changes: list[str] = []
    kiosk.on("participant_attributes_changed", lambda changed, who: changes.append(changed.get("lk.agent.state", "")))
    async with asyncio.timeout(5):
        await agent.local_participant.set_attributes({"lk.agent.state": "thinking"})
    await until(lambda: "thinking" in changes, 5, "the thinking state")
    assert kiosk.remote_participants["agent-1"].attributes["lk.agent.state"] == "thinking"


async def test_text_and_byte_streams_reach_their_destinations_intact(
    kiosk_and_agent: tuple[rtc.Room, rtc.Room, rtc.Room],
) -> None:
    """Streams reach only their destination identities, with topic, attributes and (for agents) on-behalf senders."""
    kiosk, agent, avatar = kiosk_and_agent
    texts: dict[str, list[tuple[str, str, dict[str, str]]]] = {"kiosk": [], "avatar": []}
    chunks: list[bytes] = []
    tasks: set[asyncio.Task[None]] = set()

    def on_text(name: str) -> object:
        def handler(reader: rtc.TextStreamReader, sender: str) -> None:
            async def read() -> None:
                texts[name].append((sender, await reader.read_all(), dict(reader.info.attributes or {})))

            task = asyncio.create_task(read())
            tasks.add(task)

        return handler

    def on_bytes(reader: rtc.ByteStreamReader, sender: str) -> None:
        async def read() -> None:
            async for chunk in reader:
                chunks.append(chunk)

        task = asyncio.create_task(read())
        tasks.add(task)

    kiosk.register_text_stream_handler("lk.transcription", on_text("kiosk"))
    avatar.register_text_stream_handler("lk.transcription", on_text("avatar"))
    agent.register_byte_stream_handler("lk.agent.pre-connect-audio-buffer", on_bytes)
    await until(
        lambda: "kiosk" in agent.remote_participants and "avatar-1" in agent.remote_participants,
        5,
        "the kiosk and the avatar",
    )
    attributes = {"lk.transcribed_track_id": "TR_x", "lk.segment_id": "SG_1", "lk.transcription_final": "true"}
    async with asyncio.timeout(5):
        await agent.local_participant.send_text(
            "hello there", topic="lk.transcription", destination_identities=["kiosk"], attributes=attributes
        )
        writer = await agent.local_participant.stream_text(
            topic="lk.transcription", sender_identity="kiosk", attributes=attributes
        )
        await writer.write("what the visitor said")
        await writer.aclose()
        payload = bytes(range(256)) * 64
        await kiosk.local_participant.send_bytes(
            payload,
            name="preconnect",
            topic="lk.agent.pre-connect-audio-buffer",
            destination_identities=["agent-1"],
            attributes={"sampleRate": "48000", "channels": "1"},
        )
    await until(
        lambda: len(texts["kiosk"]) == 2 and len(texts["avatar"]) == 1 and sum(map(len, chunks)) == 16384,
        5,
        "the texts and the byte stream",
    )
    assert texts["kiosk"][0] == ("agent-1", "hello there", attributes)
    assert texts["kiosk"][1] == ("kiosk", "what the visitor said", attributes)
    assert texts["avatar"] == [("kiosk", "what the visitor said", attributes)]
    assert b"".join(chunks) == payload
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)


def test_only_agents_forward_transcriptions_and_nobody_forwards_metrics() -> None:
    """A visitor's transcription packet and anyone's metrics stay at the server; an agent's transcription passes."""
    visitor = Sender(identity="kiosk", sid="PA_k", is_agent=False)
    agent = Sender(identity="agent-1", sid="PA_a", is_agent=True)
    transcription = models.DataPacket(transcription=models.Transcription(transcribed_participant_identity="kiosk"))
    assert route_data(visitor, models.DataPacket.FromString(transcription.SerializeToString()), 0) is None
    assert route_data(agent, transcription, models.DataPacket.RELIABLE) is not None
    assert route_data(agent, models.DataPacket(metrics=metrics.MetricsBatch()), models.DataPacket.RELIABLE) is None


def test_user_packets_take_the_senders_identity_and_either_destination_list() -> None:
    """A user packet cannot claim another identity; destinations named on the payload apply to the packet too."""
    packet = models.DataPacket(
        participant_identity="someone-else",
        user=models.UserPacket(payload=b"x", topic="t", destination_identities=["bob"], destination_sids=["PA_c"]),
    )
    delivery = route_data(Sender(identity="alice", sid="PA_a", is_agent=True), packet, models.DataPacket.LOSSY)
    assert delivery is not None
    forwarded = models.DataPacket.FromString(delivery.data)
    assert forwarded.participant_identity == "alice" and forwarded.user.participant_identity == "alice"
    assert forwarded.kind == models.DataPacket.LOSSY
    assert delivery.reaches("bob", "PA_b") and delivery.reaches("carol", "PA_c")
    assert not delivery.reaches("dave", "PA_d")


def test_an_unparsable_data_packet_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Garbage on a data channel is logged and dropped; the room goes on."""
    room = Room("garbage")
    sender = SimpleNamespace(identity="kiosk", sid="PA_k", info=models.ParticipantInfo())
    room.forward_data(sender, "_reliable", b"\xff\xff\xff")  # type: ignore[arg-type]
    assert "dropping an unparsable data packet from kiosk" in caplog.text
