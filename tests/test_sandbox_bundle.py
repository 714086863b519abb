"""Every track the sandbox forwards reaches its subscriber, however the subscriptions fall on the negotiation.

The subscriber here is a plain aiortc client (``max-bundle``, so that its own receivers take every track) answering
the sandbox's :class:`kiosk_sandbox.peer.Peer` offers; what is judged is whether the sandbox's senders send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from aiortc import MediaStreamTrack, RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from aiortc.sdp import candidate_from_sdp
from livekit.protocol import models
from livekit.protocol import rtc as signal

from kiosk_sandbox.peer import Peer
from tests.fixtures.waiting import until

HOLD_S = 1.0  # how long a client holding its candidates waits for a second offer before it trickles them
FRAMES = 10  # 20 ms each: 200 ms of audio per track proves its sender runs
WITHIN_S = 20.0


class _Room:
    """The little of a room a subscriber needs: nothing it publishes is used here."""

    relay: Any = None

    async def publish(self, peer: Peer, info: models.TrackInfo, track: MediaStreamTrack) -> None:
        raise AssertionError("the subscriber publishes nothing")

    async def broadcast(self, infos: Iterable[models.ParticipantInfo], *, exclude: Peer | None = None) -> None:
        return None

    def forward_data(self, sender: Peer, label: str, payload: bytes) -> None:
        return None

    async def simulate(self, peer: Peer, scenario: signal.SimulateScenario) -> None:
        return None


class _Owner:
    """The publisher of the forwarded tracks: it is told of each subscription."""

    sid = "PA_alice"
    closed = False

    async def send(self, response: signal.SignalResponse) -> None:
        return None


class Client:
    """An aiortc subscriber behind a signaling socket: answers each offer and counts the frames of each track."""

    def __init__(self, *, hold_candidates: bool = False) -> None:
        """``hold_candidates``: send the first answer without candidates and trickle them once a second offer came
        (or ``HOLD_S`` passed), so that the connection is still being established when that offer is answered."""
        self._hold = hold_candidates
        self._second_offer = asyncio.Event()
        self.offers = 0
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.frames: dict[str, int] = {}
        self.peer: Peer | None = None
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.pc.on("track", lambda track: self._spawn(self._count(track)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count(self, track: MediaStreamTrack) -> None:
        self.frames[track.id] = 0
        try:
            while True:
                await track.recv()
                self.frames[track.id] += 1
        except MediaStreamError:
            return

    async def send_bytes(self, data: bytes) -> None:
        """What the sandbox sends on the signaling socket."""
        response = signal.SignalResponse.FromString(data)
        if response.WhichOneof("message") == "offer":
            self._spawn(self._answer(response.offer))

    async def _answer(self, offer: signal.SessionDescription) -> None:
        self.offers += 1
        if self.offers == 2:
            self._second_offer.set()
        held = self._hold and self.offers == 1
        offer_sdp, theirs = _without_candidates(offer.sdp) if held else (offer.sdp, [])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        sdp, ours = _without_candidates(self.pc.localDescription.sdp) if held else (self.pc.localDescription.sdp, [])
        assert self.peer is not None
        await self.peer.handle(
            signal.SignalRequest(answer=signal.SessionDescription(type="answer", sdp=sdp, id=offer.id))
        )
        if not held:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._second_offer.wait(), HOLD_S)
        for line in theirs:
            candidate = candidate_from_sdp(line.removeprefix("candidate:"))
            candidate.sdpMid, candidate.sdpMLineIndex = "0", 0
            await self.pc.addIceCandidate(candidate)
        for line in ours:
            init = json.dumps({"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0})
            trickle = signal.TrickleRequest(candidateInit=init, target=signal.SignalTarget.SUBSCRIBER)
            await self.peer.handle(signal.SignalRequest(trickle=trickle))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()


def _without_candidates(sdp: str) -> tuple[str, list[str]]:
    """``sdp`` without its ``a=candidate`` lines, and those candidates (``candidate:...``, each once)."""
    lines = sdp.splitlines(keepends=True)
    candidates = [line.strip()[2:] for line in lines if line.startswith("a=candidate:")]
    kept = "".join(line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates")))
    return kept, list(dict.fromkeys(candidates))


@pytest.fixture(params=[False, True], ids=["candidates_in_the_answer", "candidates_trickled_late"])
async def bob(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Peer, Client]]:
    """The sandbox's participant ``bob`` and the aiortc client on the other end of its subscriber connection."""
    client = Client(hold_candidates=request.param)
    info = models.ParticipantInfo(sid="PA_bob", identity="bob")
    peer = Peer(room=_Room(), info=info, ws=client)  # type: ignore[arg-type]
    client.peer = peer
    yield peer, client
    await peer.close()
    await client.close()


async def _all_flow(client: Client, count: int) -> None:
    await until(
        lambda: len(client.frames) == count and min(client.frames.values()) >= FRAMES,
        WITHIN_S,
        f"all {count} tracks to carry {FRAMES} frames",
        details=lambda: f"frames per track: {list(client.frames.values())}",
    )


def _subscribe(peer: Peer, count: int) -> None:
    for index in range(count):
        peer.subscribe(_Owner(), f"TR_{index}", AudioStreamTrack())  # type: ignore[arg-type]


async def test_three_tracks_subscribed_at_once_after_the_connection_is_up_all_flow(bob: tuple[Peer, Client]) -> None:
    """Bob joined an empty room (data channels only), then three tracks arrive in one renegotiation."""
    peer, client = bob
    await peer.start()
    await until(lambda: peer.subscriber.connectionState == "connected", WITHIN_S, "the subscriber connection")
    _subscribe(peer, 3)
    await _all_flow(client, 3)


async def test_tracks_subscribed_while_the_connection_is_being_established_all_flow(bob: tuple[Peer, Client]) -> None:
    """Tracks arrive once Bob's first offer (data channels only) is out, the connection still being established."""
    peer, client = bob
    await peer.start()
    await until(lambda: client.offers >= 1, WITHIN_S, "the first offer")
    _subscribe(peer, 3)
    await _all_flow(client, 3)
