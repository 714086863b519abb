"""The first words' send (``kiosk.daemon.uplink.send_first_words``): bounded by time on a working link, so that a
Wi-Fi drop while they are on their way is an outage (reconnecting, ``network_lost``), not ``first_words_timeout``."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kiosk import session as sm
from kiosk.audio.preroll import PreConnectAudio
from kiosk.daemon.lifecycle import StepTimeout
from kiosk.daemon.linkdown import Outages
from kiosk.daemon.uplink import FIRST_WORDS_TIMEOUT_S, send_first_words
from kiosk.reasons import FailureReason

TIMEOUT_S = 10.0
WORDS = PreConnectAudio(pcm=np.zeros(4800, np.int16).tobytes(), duration_s=0.1)


class StuckRoom:
    """A room whose pre-connect send returns only when ``sent`` is set (a link that does not take the bytes)."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()
        self.cancelled = False

    async def send_preconnect(self, audio: object) -> None:
        """Wait for the test to let the bytes through."""
        try:
            await self.sent.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class Scene:
    """A fake monotonic clock, the session's outages, the link watch's last arrival and the session clock's ends."""

    def __init__(self) -> None:
        self.now = 100.0
        self.outages = Outages()
        self.arrived: float | None = 100.0
        self.end: sm.Event | None = None
        self._checked = asyncio.Event()
        self.checked_at = 0.0

    def due(self, now: float) -> sm.Event | None:
        """The session clock: called on every check of the send."""
        self.checked_at = now
        self._checked.set()
        return self.end

    async def at(self, t: float) -> None:
        """Move the clock to ``t`` and wait until the send has looked at it."""
        self.now = t
        async with asyncio.timeout(TIMEOUT_S):
            while self.checked_at < t:
                self._checked.clear()
                await self._checked.wait()

    async def send(self, room: StuckRoom) -> asyncio.Future[sm.Event | None]:
        """Start sending the first words into ``room`` now (the send has read the clock once it returns)."""
        task = asyncio.ensure_future(
            send_first_words(
                room,  # type: ignore[arg-type]
                WORDS,
                outages=self.outages,
                last_arrival=lambda: self.arrived,
                due=self.due,
                clock=lambda: self.now,
            )
        )
        await asyncio.sleep(0)  # the send reads the clock (its start) when it first runs
        return task


async def test_a_working_link_that_does_not_take_the_words_times_out_as_first_words_timeout() -> None:
    """Packets keep arriving yet the words are not taken: ``first_words_timeout`` after the bound, not before."""
    scene, room = Scene(), StuckRoom()
    task = await scene.send(room)
    scene.arrived = 100.0 + FIRST_WORDS_TIMEOUT_S - 0.5
    await scene.at(100.0 + FIRST_WORDS_TIMEOUT_S - 0.1)
    assert not task.done()
    scene.arrived = 100.0 + FIRST_WORDS_TIMEOUT_S
    await scene.at(100.0 + FIRST_WORDS_TIMEOUT_S + 0.2)
    with pytest.raises(StepTimeout) as caught:
        await asyncio.wait_for(task, TIMEOUT_S)
    assert caught.value.reason == FailureReason.FIRST_WORDS_TIMEOUT and room.cancelled


async def test_a_drop_while_the_words_are_sent_is_an_outage_and_they_go_once_the_link_is_back() -> None:
    """The link goes quiet 1 s into the send and the link watch calls it down 3 s later: its outage does not count
    against the bound, nor do the seconds before its verdict; once back, the words go through and nothing failed."""
    scene, room = Scene(), StuckRoom()
    task = await scene.send(room)
    scene.arrived = 101.0  # the last packet before the drop
    await scene.at(104.0)
    await scene.at(106.5)  # 6.5 s into the send, nothing arrived for 5.5 s: not judged yet, so not the words' fault
    assert not task.done()
    scene.outages.down(101.0)  # the link watch's verdict, dated from the last arrival
    await scene.at(125.0)
    assert not task.done(), "time the link was down counted against the first words"
    scene.outages.up(125.0)
    scene.arrived = 125.0
    await scene.at(126.0)
    room.sent.set()
    assert await asyncio.wait_for(task, TIMEOUT_S) is None
    assert not room.cancelled


async def test_an_outage_that_outlasts_its_bound_ends_the_session_while_the_words_wait() -> None:
    """The session clock's end (``network_lost``) comes due during the send: it is returned and the send dropped."""
    scene, room = Scene(), StuckRoom()
    task = await scene.send(room)
    scene.arrived = 100.5
    scene.outages.down(100.5)
    await scene.at(110.0)
    lost = sm.Failure(FailureReason.NETWORK_LOST)
    scene.end = lost
    await scene.at(121.0)
    assert await asyncio.wait_for(task, TIMEOUT_S) is lost
    assert room.cancelled


async def test_words_taken_at_once_return_none() -> None:
    """The usual case: the send returns, nothing else happens."""
    scene, room = Scene(), StuckRoom()
    room.sent.set()
    assert await asyncio.wait_for(await scene.send(room), TIMEOUT_S) is None
