"""Offer/answer and trickled candidates of one participant's two aiortc peer connections (livekit-server's roles).

The server offers the subscriber connection (its tracks and data channels for the client) and answers the client's
publisher offers; candidates trickle in with ``TrickleRequest.target`` naming the connection, possibly before its
remote description, so they wait until it is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.sdp import candidate_from_sdp
from livekit.protocol import rtc as signal

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 10.0
_PUBLISHER = signal.SignalTarget.PUBLISHER


def description(kind: str, sdp: str, offer_id: int) -> signal.SessionDescription:
    """A ``SessionDescription`` of ``kind`` (``offer`` or ``answer``) with the id that pairs offer and answer."""
    return signal.SessionDescription(type=kind, sdp=sdp, id=offer_id)


class TrickledCandidates:
    """Remote ICE candidates per connection, held until that connection has its remote description."""

    def __init__(self, publisher: RTCPeerConnection, subscriber: RTCPeerConnection) -> None:
        """Feed candidates to ``publisher`` (target PUBLISHER) and ``subscriber`` (target SUBSCRIBER)."""
        self._pcs = {0: publisher, 1: subscriber}
        self._pending: dict[int, list[dict[str, Any]]] = {0: [], 1: []}

    async def add(self, trickle: signal.TrickleRequest) -> None:
        """Take one trickled candidate (``candidateInit`` JSON); an end-of-candidates marker is ignored."""
        init = json.loads(trickle.candidateInit or "{}")
        if not init.get("candidate"):
            return
        target = 0 if trickle.target == _PUBLISHER else 1
        self._pending[target].append(init)
        if self._pcs[target].remoteDescription is not None:
            await self.flush(target)

    async def flush(self, target: int) -> None:
        """Add the held candidates of connection ``target`` (0 publisher, 1 subscriber)."""
        pending, self._pending[target] = self._pending[target], []
        for init in pending:
            candidate = candidate_from_sdp(str(init["candidate"]).removeprefix("candidate:"))
            candidate.sdpMid = init.get("sdpMid")
            candidate.sdpMLineIndex = init.get("sdpMLineIndex")
            await self._pcs[target].addIceCandidate(candidate)


class SubscriberOffers:
    """The server's offers on the subscriber connection: one at a time, each waiting for the client's answer."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        *,
        name: str,
        send: Callable[[signal.SignalResponse], Awaitable[None]],
        answered: Callable[[], Awaitable[None]],
    ) -> None:
        """Offer ``pc`` through ``send``; run ``answered()`` after each answer is applied (``name`` for logs)."""
        self._pc = pc
        self._name = name
        self._send = send
        self._answered = answered
        self._answer: asyncio.Future[RTCSessionDescription] | None = None
        self._wanted = False
        self._task: asyncio.Task[None] | None = None
        self._offer_id = 0
        self._negotiated = False
        self.closed = False

    def request(self) -> None:
        """Ask for a (re)negotiation; requests made while an offer is out are served by one more offer."""
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    def answer(self, sdp: str) -> None:
        """The client's answer to the offer that is out."""
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(RTCSessionDescription(sdp=sdp, type="answer"))

    def restart(self) -> None:
        """Offer anew (after a resume): the answer to an offer sent on the old socket may never come."""
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        self.request()

    def close(self) -> None:
        """Stop offering."""
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()

    async def _settled(self) -> None:
        """Wait (up to ``ANSWER_TIMEOUT_S``) while the negotiated transport is still being established.

        aiortc (1.16) starts a new transceiver's sender from the task each answer schedules, and that task skips
        every transceiver whose DTLS transport is not yet ``connected``; the task of the first answer, which is the
        one establishing it, has passed them by already. An answer applied in that window leaves its tracks silent.
        The transport watched is the data channels' one: the subscriber's first offer carries only the data channels,
        so the answer's BUNDLE puts every later track on it. (Not ``connectionState``: aiortc leaves it at
        ``connecting`` once a transport a BUNDLE made spare was dropped.)
        """
        transport = self._pc.sctp.transport if self._pc.sctp is not None else None
        if not self._negotiated or transport is None or transport.state not in ("new", "connecting"):
            return
        settled = asyncio.Event()

        def on_state() -> None:
            if transport.state not in ("new", "connecting"):
                settled.set()

        transport.on("statechange", on_state)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await settled.wait()
        except TimeoutError:
            logger.warning("%s's subscriber transport is still %s; offering anyway", self._name, transport.state)
        finally:
            transport.remove_listener("statechange", on_state)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._wanted and not self.closed:
            await self._settled()
            self._wanted = False
            try:
                await self._pc.setLocalDescription(await self._pc.createOffer())
                self._offer_id += 1
                self._answer = loop.create_future()
                await self._send(
                    signal.SignalResponse(offer=description("offer", self._pc.localDescription.sdp, self._offer_id))
                )
                try:
                    async with asyncio.timeout(ANSWER_TIMEOUT_S):
                        answer = await self._answer
                except asyncio.CancelledError:
                    if self.closed or (task := asyncio.current_task()) is None or task.cancelling():
                        raise
                    self._wanted = True  # restart(): offer again
                    continue
                await self._pc.setRemoteDescription(answer)
                self._negotiated = True
                await self._answered()
            except InvalidStateError as exc:
                logger.debug("subscriber renegotiation for %s raced a close: %s", self._name, exc)
                return
            except TimeoutError:
                logger.warning("%s did not answer the subscriber offer in time", self._name)
                return
