"""The sandbox reconnects like livekit-server, judged by the official SDK: resume, full reconnect, departure, reasons."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import api, rtc

from kiosk_sandbox import Sandbox
from tests.fixtures.sandbox import RATE, SandboxHandle, running_sandbox, speak, visitor_speech
from tests.fixtures.waiting import until

logger = logging.getLogger(__name__)

TIMEOUT_S = 20.0
DEPARTURE_S = 6.0  # the SDK takes about 3 s to give up a resume whose signal was cut again
AGENT = "sandbox-agent"
_Reason = rtc.DisconnectReason


@pytest.fixture(scope="module")
def reconnect_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """A sandbox subprocess that removes a vanished participant after ``DEPARTURE_S``."""
    args = ("--agent-no-show", "20", "--departure-timeout", str(DEPARTURE_S))
    with running_sandbox(tmp_path_factory.mktemp("reconnect"), *args) as (handle, _process):
        yield handle


@dataclass
class Client:
    """A plain SDK client: its room, what it saw, and (once published) its microphone."""

    identity: str
    room: rtc.Room = field(default_factory=rtc.Room)
    events: list[tuple[float, str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    mic: rtc.AudioSource | None = None
    #: The agent's ``lk.agent.state`` values, in order.
    states: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.room.on("participant_attributes_changed", self._on_attributes)
        for name in ("reconnecting", "reconnected", "disconnected", "participant_connected"):
            self.room.on(name, lambda *args, _n=name: self._saw(_n, args[0] if args else None))
        self.room.on("participant_disconnected", lambda p: self._saw("participant_disconnected", p))
        self.room.on("data_received", lambda packet: self._saw("data", packet.data))

    def _on_attributes(self, changed: dict[str, str], _who: rtc.Participant) -> None:
        if "lk.agent.state" in changed:
            self.states.append(changed["lk.agent.state"])
            self.changed.set()

    async def greeted(self) -> None:
        """Wait until the agent has greeted and listens (its state went speaking, then listening)."""
        await until(
            lambda: "speaking" in self.states and self.states[-1] == "listening",
            TIMEOUT_S,
            "the agent to greet and listen",
            details=lambda: f"states: {self.states}",
        )

    def _saw(self, name: str, value: Any) -> None:
        self.events.append((time.monotonic(), name, value))
        self.changed.set()

    def seen(self, name: str) -> list[Any]:
        """Values of every ``name`` event so far."""
        return [value for _, kind, value in self.events if kind == name]

    async def wait(self, name: str, predicate: Any = None, within: float = TIMEOUT_S) -> Any:
        """Wait for an event ``name`` whose value satisfies ``predicate``; return its value."""
        async with _within(within, f"{self.identity}'s {name!r} event (events so far: {[e[1] for e in self.events]})"):
            while True:
                for value in self.seen(name):
                    if predicate is None or predicate(value):
                        return value
                self.changed.clear()
                await self.changed.wait()

    async def connect(self, url: str, token: str) -> None:
        """Join within the test timeout."""
        async with _within(TIMEOUT_S, f"{self.identity} to connect"):
            await self.room.connect(url, token)

    async def publish_mic(self) -> rtc.LocalTrackPublication:
        """Publish a microphone track fed from an ``rtc.AudioSource``."""
        self.mic = rtc.AudioSource(RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.mic)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        async with _within(TIMEOUT_S, f"{self.identity}'s microphone to be published"):
            return await self.room.local_participant.publish_track(track, options)

    async def close(self) -> None:
        """Leave (bounded)."""
        async with asyncio.timeout(10):
            await self.room.disconnect()


class Ears:
    """Records one remote participant's audio, track after track (a rejoin brings a new track)."""

    def __init__(self, room: rtc.Room, speaker: str | None = None) -> None:
        """Listen in ``room`` to every audio track ``speaker`` (or, if None, the agent) publishes from now on."""
        self.frames: list[tuple[float, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._speaker = speaker
        room.on("track_subscribed", self._on_track)
        for participant in room.remote_participants.values():
            for pub in participant.track_publications.values():
                if pub.track is not None:
                    self._on_track(pub.track, pub, participant)

    def _on_track(self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
        agent = who.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and _pub.name != "background_audio"
        wanted = who.identity == self._speaker if self._speaker is not None else agent
        if wanted and track.kind == rtc.TrackKind.KIND_AUDIO:
            task = asyncio.create_task(self._record(track))
            self._tasks.add(task)

    async def _record(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            peak = int(np.abs(np.frombuffer(bytes(event.frame.data), np.int16)).max())
            self.frames.append((time.monotonic(), peak))

    def loud_since(self, since: float, until: float = float("inf")) -> int:
        """How many frames with audible speech arrived after ``since`` (and before ``until``; ``time.monotonic()``)."""
        return sum(1 for at, peak in self.frames if since < at < until and peak > 2000)

    async def close(self) -> None:
        """Stop recording."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def _within(seconds: float, what: str) -> AsyncIterator[None]:
    """Bound a step by ``seconds``; a step that runs over fails naming ``what`` (not a bare TimeoutError)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds:g} s waiting for {what}") from None


@pytest.fixture
async def call(reconnect_sandbox: SandboxHandle) -> AsyncIterator[tuple[Client, Client, str]]:
    """Alice (the visitor, with the scripted agent dispatched, publishing a microphone) and Bob, who listens."""
    room = f"rc-{secrets.token_hex(3)}"
    alice, bob = Client("alice"), Client("bob")
    await alice.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("alice", room, agent_name=AGENT))
    await bob.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("bob", room))
    yield alice, bob, room
    await asyncio.gather(alice.close(), bob.close())


async def _turn_heard(sandbox: SandboxHandle, room: str, alice: Client, turns_before: int) -> dict[str, Any]:
    """Alice says one turn; return the session record once the scripted agent counted it."""
    assert alice.mic is not None
    async with _within(TIMEOUT_S, "Alice's speech to be sent"):
        await speak(alice.mic, visitor_speech())
    async with _within(TIMEOUT_S + 1, f"the agent to count turn {turns_before + 1}"):
        return await sandbox.wait_session(room, lambda r: r["heard"]["turns"] > turns_before, within=TIMEOUT_S)


@pytest.mark.parametrize(
    "scenario",
    [
        rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT,
        rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT,
        rtc.SimulateScenarioKind.SIMULATE_DISCONNECT_SIGNAL_ON_RESUME,
        rtc.SimulateScenarioKind.SIMULATE_NODE_FAILURE,
    ],
    ids=["signal_reconnect", "full_reconnect", "disconnect_signal_on_resume", "node_failure"],
)
async def test_the_sdk_comes_back_with_its_microphone(
    reconnect_sandbox: SandboxHandle, call: tuple[Client, Client, str], scenario: int
) -> None:
    """After a simulated drop the SDK reconnects, keeps its publication, and the agent and Bob still hear it.

    A signal reconnect is a resume (same sid, same publication, invisible to Bob); the others end in the SDK's full
    reconnect (a refused or severed resume, then a rejoin that republishes the microphone).
    """
    alice, bob, room = call
    publication = await alice.publish_mic()
    ears = Ears(bob.room, "alice")
    sid_before = alice.room.local_participant.sid
    await alice.greeted()
    record = await _turn_heard(reconnect_sandbox, room, alice, 0)
    started = time.monotonic()
    async with _within(TIMEOUT_S, "simulate_scenario to return"):
        await alice.room.simulate_scenario(scenario)
    await alice.wait("reconnecting")
    await alice.wait("reconnected")
    back = time.monotonic()
    logger.info("scenario %s: reconnected after %.2f s", scenario, back - started)
    assert alice.room.isconnected() and not alice.seen("disconnected")
    mics = [p for p in alice.room.local_participant.track_publications.values() if p.name == "microphone"]
    assert len(mics) == 1, "the SDK must come back with exactly one microphone publication"
    if scenario == rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT:
        assert alice.room.local_participant.sid == sid_before and mics[0].sid == publication.sid
        assert not bob.seen("participant_disconnected"), "a resume is invisible to the others"
    record = await _turn_heard(reconnect_sandbox, room, alice, record["heard"]["turns"])
    await until(
        lambda: ears.loud_since(back) > 10,
        TIMEOUT_S,
        "Bob to hear Alice after the reconnect",
        details=lambda: _bob_report(ears, bob, back, started, reconnect_sandbox),
    )
    assert record["ended_at"] is None, "a reconnect must not end the session"
    async with _within(TIMEOUT_S, "Alice's data packet to be sent"):
        await alice.room.local_participant.publish_data(b"still here", reliable=True)
    await bob.wait("data", lambda d: d == b"still here")
    await ears.close()


def _bob_report(ears: Ears, bob: Client, back: float, started: float, sandbox: SandboxHandle) -> str:
    """What Bob received from Alice before and after her reconnect, his events, and the sandbox's log."""
    before = [peak for at, peak in ears.frames if at < started]
    after = [peak for at, peak in ears.frames if at > back]
    tracks = {
        p.identity: [(pub.sid, pub.subscribed) for pub in p.track_publications.values()]
        for p in bob.room.remote_participants.values()
    }
    return (
        f"Bob's frames of Alice: {len(before)} before the scenario (max peak {max(before, default=0)}), "
        f"{len(after)} after the reconnect (max peak {max(after, default=0)}); "
        f"Bob's events: {[e[1] for e in bob.events]}; his remote tracks: {tracks}\n"
        f"sandbox log (tail):\n{sandbox.log_path.read_text()[-4000:]}"
    )


_VANISHING_CLIENT = """
import asyncio, sys
from livekit import rtc
async def main():
    room = rtc.Room()
    await asyncio.wait_for(room.connect(sys.argv[1], sys.argv[2]), 20)
    source = rtc.AudioSource(16000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    await asyncio.wait_for(room.local_participant.publish_track(track, rtc.TrackPublishOptions()), 20)
    print("ready", flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


def _agent_token(sandbox: SandboxHandle, identity: str, room: str) -> str:
    """A token of kind agent: the session manager does not count its holder as a human."""
    grants = api.VideoGrants(room_join=True, room=room, agent=True)
    token = api.AccessToken(sandbox.livekit_api_key, sandbox.livekit_api_secret).with_identity(identity)
    return token.with_kind("agent").with_grants(grants).to_jwt()


async def test_a_vanished_participant_departs_after_the_timeout(reconnect_sandbox: SandboxHandle) -> None:
    """A client killed without leave is kept for the departure timeout, then removed (CONNECTION_TIMEOUT)."""
    room = f"gone-{secrets.token_hex(3)}"
    watcher = Client("watcher")
    await watcher.connect(reconnect_sandbox.ws_url, _agent_token(reconnect_sandbox, "watcher", room))
    token = reconnect_sandbox.mint_token("carol", room, agent_name=AGENT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _VANISHING_CLIENT, reconnect_sandbox.ws_url, token, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(TIMEOUT_S):
            assert (await process.stdout.readline()).strip() == b"ready"
        killed_at, killed_wall = time.monotonic(), time.time()
        process.kill()
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 10)
    gone = await watcher.wait("participant_disconnected", lambda p: p.identity == "carol", within=DEPARTURE_S + 20)
    departed_after = [at for at, kind, _ in watcher.events if kind == "participant_disconnected"][-1] - killed_at
    logger.info("carol departed %.2f s after her process was killed", departed_after)
    assert gone.disconnect_reason == _Reason.CONNECTION_TIMEOUT
    assert departed_after >= DEPARTURE_S - 0.5, "kept for the departure timeout first"
    record = await reconnect_sandbox.wait_session(room, lambda r: r["ended_at"] is not None, within=TIMEOUT_S)
    assert record["end_reason"] == "last_participant_left"
    assert record["ended_at"] >= killed_wall + DEPARTURE_S - 0.5, "the session ended only once she was removed"
    await watcher.close()


async def test_delete_room_disconnects_everyone_with_room_deleted(reconnect_sandbox: SandboxHandle) -> None:
    """RoomService.DeleteRoom (what EndCallTool calls): every participant's SDK reports ROOM_DELETED."""
    room = f"del-{secrets.token_hex(3)}"
    alice, bob = Client("alice"), Client("bob")
    await alice.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("alice", room))
    await bob.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("bob", room))
    url, key, secret = reconnect_sandbox.ws_url, reconnect_sandbox.livekit_api_key, reconnect_sandbox.livekit_api_secret
    async with asyncio.timeout(TIMEOUT_S), api.LiveKitAPI(url, key, secret) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert await alice.wait("disconnected") == _Reason.ROOM_DELETED
    assert await bob.wait("disconnected") == _Reason.ROOM_DELETED


async def test_remove_participant_gives_participant_removed(reconnect_sandbox: SandboxHandle) -> None:
    """RoomService.RemoveParticipant: the removed SDK reports PARTICIPANT_REMOVED, the others see it leave so."""
    room = f"rm-{secrets.token_hex(3)}"
    alice, bob = Client("alice"), Client("bob")
    await alice.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("alice", room))
    await bob.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("bob", room))
    url, key, secret = reconnect_sandbox.ws_url, reconnect_sandbox.livekit_api_key, reconnect_sandbox.livekit_api_secret
    async with asyncio.timeout(TIMEOUT_S), api.LiveKitAPI(url, key, secret) as lk:
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity="alice"))
    assert await alice.wait("disconnected") == _Reason.PARTICIPANT_REMOVED
    gone = await bob.wait("participant_disconnected", lambda p: p.identity == "alice")
    assert gone.disconnect_reason == _Reason.PARTICIPANT_REMOVED
    await bob.close()


async def test_the_same_identity_joining_afresh_replaces_the_first(reconnect_sandbox: SandboxHandle) -> None:
    """A second client with the same identity: the first one's SDK reports DUPLICATE_IDENTITY."""
    room = f"dup-{secrets.token_hex(3)}"
    first, second, bob = Client("kiosk"), Client("kiosk"), Client("bob")
    await bob.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("bob", room))
    await first.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("kiosk", room))
    first_sid = first.room.local_participant.sid
    await second.connect(reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("kiosk", room))
    assert await first.wait("disconnected") == _Reason.DUPLICATE_IDENTITY
    gone = await bob.wait("participant_disconnected", lambda p: p.sid == first_sid)
    assert gone.disconnect_reason == _Reason.DUPLICATE_IDENTITY
    await bob.wait("participant_connected", lambda p: p.sid == second.room.local_participant.sid)
    assert second.room.isconnected() and not second.seen("disconnected")
    await asyncio.gather(second.close(), bob.close())


async def test_stopping_the_server_says_server_shutdown(tmp_path: Path) -> None:
    """Sandbox.stop() sends every participant of an open session leave with SERVER_SHUTDOWN."""
    sandbox = Sandbox(host="127.0.0.1", port=0, state_dir=tmp_path, agent_mode="none")
    await sandbox.start()
    alice = Client("alice")
    try:
        # a token that dispatches an agent opens a session (nobody is sent with agent_mode none)
        await alice.connect(sandbox.ws_url, sandbox.mint_token("alice", "shop", agent_name=AGENT))
    finally:
        await asyncio.wait_for(sandbox.stop(), TIMEOUT_S)
    assert await alice.wait("disconnected") == _Reason.SERVER_SHUTDOWN


async def test_end_call_says_goodbye_then_deletes_the_room(reconnect_sandbox: SandboxHandle) -> None:
    """Agent behaviour end_call: after the first turn, a goodbye plays out, then DeleteRoom (ROOM_DELETED)."""
    room = f"bye-{secrets.token_hex(3)}"
    alice = Client("alice")
    ears = Ears(alice.room)
    await alice.connect(
        reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("alice", room, agent_name=f"{AGENT}:end_call")
    )
    await alice.publish_mic()
    await alice.greeted()
    await _turn_heard(reconnect_sandbox, room, alice, 0)
    assert await alice.wait("disconnected") == _Reason.ROOM_DELETED
    ended = next(at for at, kind, _ in alice.events if kind == "disconnected")
    assert ears.loud_since(ended - 1.0, ended) > 30, "the goodbye played right up to the room's deletion"
    record = await reconnect_sandbox.wait_session(room, lambda r: r["ended_at"] is not None)
    assert record["end_reason"] == "room_deleted" and record["heard"]["turns"] == 1
    await ears.close()


async def test_a_stuck_agent_claims_to_speak_and_stays_silent(reconnect_sandbox: SandboxHandle) -> None:
    """Agent behaviour stuck: after the first turn lk.agent.state says speaking and no agent audio comes."""
    room = f"stuck-{secrets.token_hex(3)}"
    alice = Client("alice")
    ears = Ears(alice.room)
    await alice.connect(
        reconnect_sandbox.ws_url, reconnect_sandbox.mint_token("alice", room, agent_name=f"{AGENT}:stuck")
    )
    await alice.publish_mic()
    await alice.greeted()
    record = await _turn_heard(reconnect_sandbox, room, alice, 0)
    await until(lambda: alice.states[-1] == "speaking", TIMEOUT_S, "the agent speaking")
    stuck_at = time.monotonic()
    await _turn_heard(reconnect_sandbox, room, alice, record["heard"]["turns"])
    assert alice.states[-1] == "speaking" and ears.loud_since(stuck_at) == 0
    assert len(ears.frames) > 0
    await alice.close()
    await ears.close()
