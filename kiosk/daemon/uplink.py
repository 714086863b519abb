"""The microphone's way into the room: capture -> :class:`~kiosk.daemon.linkdown.MicBacklog` -> ``capture_frame``.

Two tasks: one moves every captured frame into the backlog the moment it arrives (a slow uplink never makes the
capture's queue drop any), the other sends the backlog to the room in :data:`MIC_SEND_FRAMES` chunks, holding it
while the room reconnects. After a full reconnect the SDK republished the microphone under a new track sid; the
agent then waits for a pre-connect buffer on it, so what was held goes there, as the first words did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, Callable

import numpy as np

from kiosk import session as sm
from kiosk.audio.frames import FRAME_MS, MicFrame
from kiosk.audio.preroll import PreConnectAudio
from kiosk.daemon.lifecycle import StepTimeout, timed
from kiosk.daemon.linkdown import MicBacklog, Outages
from kiosk.daemon.room import AgentRoom
from kiosk.reasons import FailureReason

log = logging.getLogger(__name__)

#: Live microphone frames (10 ms each) published per ``capture_frame``: one FFI request per 30 ms.
MIC_SEND_FRAMES = 3
#: A microphone frame the room has not taken for this long means the uplink is stuck.
UPLINK_TIMEOUT_S = 5.0
#: How long to wait for the agent's subscription to a republished microphone before sending the held words (s).
RESUBSCRIBE_GRACE_S = 1.0
#: The held words must reach the agent within this long: it drops a pre-connect buffer that takes over 3 s anyway.
HELD_WORDS_TIMEOUT_S = 5.0
#: The first words must reach the agent within this much time of a working link (see :func:`send_first_words`): it
#: drops a pre-connect buffer that takes over 3 s anyway.
FIRST_WORDS_TIMEOUT_S = 5.0
#: A link from which nothing arrived for this long may be dropping: the link watch calls it down 3 s in
#: (:mod:`kiosk.daemon.linkwatch`), so the first words' bound waits for its verdict instead of failing first.
QUIET_LINK_S = 1.0
#: How often the first words' send checks its bound and the session's ends (s).
FIRST_WORDS_TICK_S = 0.1


async def send_first_words(
    room: AgentRoom,
    pre: PreConnectAudio,
    *,
    outages: Outages,
    last_arrival: Callable[[], float | None],
    due: Callable[[float], sm.Event | None],
    clock: Callable[[], float] = time.monotonic,
    timeout_s: float = FIRST_WORDS_TIMEOUT_S,
) -> sm.Event | None:
    """Send ``pre`` (the words spoken before the agent listened) as the agent's pre-connect buffer.

    Bounded by ``timeout_s`` (``session.first_words_timeout_s``, default :data:`FIRST_WORDS_TIMEOUT_S`) of *working
    link*: time the link was down (``outages``) does not count,
    nor does a quiet spell the link watch has not judged yet (nothing arrived for :data:`QUIET_LINK_S`;
    ``last_arrival()`` is the monotonic time of the last arrival, None before the first). A Wi-Fi drop while the
    words are on their way is an outage like any other: the session shows reconnecting and ends by its own rules
    meanwhile: ``due(now)`` is checked every :data:`FIRST_WORDS_TICK_S`, and the end it returns (``network_lost``
    after ``session.network_lost_s``, silence, ...) is returned here, the send abandoned.

    Returns:
        None once the words are sent (or the room went away under them, see ``AgentRoom.send_preconnect``), else the
        session's end that came due first.

    Raises:
        StepTimeout: (``first_words_timeout``) the link works, yet the words were not taken within the bound.
    """
    send = asyncio.ensure_future(room.send_preconnect(pre))
    started = clock()
    try:
        while True:
            done, _ = await asyncio.wait({send}, timeout=FIRST_WORDS_TICK_S)
            if done:
                send.result()
                return None
            now = clock()
            if (end := due(now)) is not None:
                log.warning("first words not sent before the session's end (%s)", type(end).__name__)
                return end
            working = now - started - outages.paused(started, now)
            arrived = last_arrival()
            quiet = arrived is not None and now - arrived >= QUIET_LINK_S
            if working > timeout_s and outages.down_since is None and not quiet:
                raise StepTimeout(
                    f"sending the first words timed out after {timeout_s:.1f} s of a working link",
                    reason=FailureReason.FIRST_WORDS_TIMEOUT,
                )
    finally:
        if not send.done():
            send.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await send


class MicUplink:
    """Sends session ``number``'s microphone to ``room``; ``outages`` says whether the link is down."""

    def __init__(
        self,
        *,
        number: int,
        capture: AsyncIterable[MicFrame],
        room: AgentRoom,
        backlog: MicBacklog,
        outages: Outages,
    ) -> None:
        self._number = number
        self._capture = capture
        self._room = room
        self._backlog = backlog
        self._outages = outages

    async def run(self) -> None:
        """Pump until the capture closes; raises ``StepTimeout`` (``uplink_timeout``) when the room stops taking
        frames, or (``first_words_timeout``) when the held words cannot be sent in time."""
        reader = asyncio.get_running_loop().create_task(self._read(), name="mic-read")
        track = self._room.mic_sid
        try:
            while (frames := await self._backlog.next_chunk(MIC_SEND_FRAMES)) is not None:
                if self._room.mic_sid != track:
                    track = self._room.mic_sid
                    await self._resend_held(frames)
                    continue
                async with timed("the microphone uplink", UPLINK_TIMEOUT_S, FailureReason.UPLINK_TIMEOUT):
                    await self._room.send_mic(np.concatenate([f.pcm for f in frames]))
        finally:
            reader.cancel()

    async def _read(self) -> None:
        async for frame in self._capture:
            self._backlog.push(frame)
        self._backlog.close()

    async def _resend_held(self, first: list[MicFrame]) -> None:
        """After a full reconnect: ``first`` and everything held since go to the agent as a pre-connect buffer."""
        self._backlog.hold()
        try:
            if not await self._room.wait_mic_subscribed(RESUBSCRIBE_GRACE_S):
                log.info("session %d: no subscription to the republished microphone confirmed", self._number)
            rest = self._backlog.take_all()
            held = PreConnectAudio(
                pcm=np.concatenate([f.pcm for f in first]).tobytes() + rest.pcm,
                duration_s=len(first) * FRAME_MS / 1000 + rest.duration_s,
            )
            log.info("session %d: %.2f s of words held through the reconnect", self._number, held.duration_s)
            async with timed("sending the held words", HELD_WORDS_TIMEOUT_S, FailureReason.FIRST_WORDS_TIMEOUT):
                await self._room.send_preconnect(held)
        finally:
            if self._outages.down_since is None:  # the link may have dropped again meanwhile
                self._backlog.release()
