"""The session's outage bookkeeping and the microphone backlog that holds the visitor's words while the link is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from kiosk.audio.frames import FRAME_SAMPLES, MicFrame
from kiosk.audio.preroll import PreConnectAudio
from kiosk.daemon.linkdown import CATCH_UP_S, HOLD_S, LATENCY_TARGET_S, MicBacklog, Outages
from kiosk.daemon.uplink import MicUplink

TIMEOUT_S = 5.0


def frame(t: float, value: int = 1000) -> MicFrame:
    """A 10 ms frame captured at ``t`` holding ``value`` everywhere."""
    return MicFrame(t=t, pcm=np.full(FRAME_SAMPLES, value, dtype=np.int16))


def test_outages_pause_the_clocks_only_while_the_link_was_down() -> None:
    """Time inside an outage is left out of any span; an open outage counts up to now; two reports are one outage."""
    out = Outages()
    out.down(10.0)
    out.down(11.0)
    assert out.count == 1 and out.down_since == 10.0
    assert out.paused(0.0, 14.0) == pytest.approx(4.0)
    assert out.up(15.0) == pytest.approx(5.0)
    assert out.up(16.0) == 0.0
    assert out.paused(0.0, 20.0) == pytest.approx(5.0)
    assert out.paused(12.0, 20.0) == pytest.approx(3.0)
    assert out.paused(16.0, 20.0) == 0.0


async def test_frames_are_held_while_the_link_is_down_then_sent_in_order() -> None:
    """Held frames come out, oldest first, only after release; nothing is lost or repeated."""
    backlog = MicBacklog(heard_speech_t=lambda: 100.0)  # the visitor speaks throughout
    backlog.hold()
    for i in range(9):
        backlog.push(frame(float(i), value=i))
    waiting = asyncio.ensure_future(backlog.next_chunk(3))
    await asyncio.sleep(0.01)
    assert not waiting.done(), "frames were handed out while the link was down"
    backlog.release()
    out = [await asyncio.wait_for(waiting, TIMEOUT_S)]
    out += [await asyncio.wait_for(backlog.next_chunk(3), TIMEOUT_S) for _ in range(2)]
    assert [int(f.pcm[0]) for chunk in out if chunk for f in chunk] == list(range(9))
    backlog.close()
    assert await asyncio.wait_for(backlog.next_chunk(3), TIMEOUT_S) is None


async def test_the_uplink_catches_up_by_skipping_pauses_not_words() -> None:
    """Behind by seconds, the frames nobody spoke in go first; every speech frame (and its lead-in) is kept."""
    speech_until: list[float] = []
    backlog = MicBacklog(heard_speech_t=lambda: speech_until[-1] if speech_until else None)
    backlog.hold()
    # 2 s of silence, 1 s of speech, 2 s of silence: 500 frames.
    for i in range(500):
        t = i / 100
        if 200 <= i < 300:
            speech_until.append(t)
        backlog.push(frame(t, value=i))
    backlog.release()
    sent: list[int] = []
    while backlog.held_s > CATCH_UP_S:
        chunk = await asyncio.wait_for(backlog.next_chunk(3), TIMEOUT_S)
        assert chunk is not None
        sent += [int(f.pcm[0]) for f in chunk]
    assert set(range(200, 300)) <= set(sent), "speech was skipped"
    assert backlog.skipped >= 150, "the pauses were not skipped"
    assert len(sent) < 250


def test_the_backlog_keeps_only_the_latest_words() -> None:
    """A link down for longer than the hold keeps the newest HOLD_S and counts what fell out."""
    backlog = MicBacklog(heard_speech_t=lambda: None)
    backlog.hold()
    frames = int(HOLD_S * 100) + 50
    for i in range(frames):
        backlog.push(frame(i / 100))
    assert backlog.held_s == pytest.approx(HOLD_S)
    assert backlog.dropped == 50
    held = backlog.take_all()
    assert held.duration_s == pytest.approx(HOLD_S) and backlog.held_s == 0.0


class FakeRoom:
    """The room as the uplink sees it: records what was sent live and as pre-connect buffers."""

    def __init__(self) -> None:
        self.mic_sid = "TR_first"
        self.live: list[int] = []
        self.buffers: list[tuple[str, int]] = []
        self.subscribed = asyncio.Event()

    async def send_mic(self, samples: np.ndarray) -> None:
        """One ``capture_frame``: note the frames' marker values."""
        self.live += [int(v) for v in samples[::FRAME_SAMPLES]]

    async def wait_mic_subscribed(self, within_s: float) -> bool:
        """The agent subscribed to the (re)published microphone."""
        await self.subscribed.wait()
        return True

    async def send_preconnect(self, audio: PreConnectAudio) -> None:
        """A pre-connect buffer for the current microphone track: note how many 10 ms frames it holds."""
        self.buffers.append((self.mic_sid, round(audio.duration_s * 100)))


class FakeCapture:
    """A session capture the test feeds frame by frame."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[MicFrame | None] = asyncio.Queue()

    def __aiter__(self) -> AsyncIterator[MicFrame]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[MicFrame]:
        while (frame := await self.queue.get()) is not None:
            yield frame


@pytest.mark.parametrize("full", [False, True])
async def test_the_uplink_holds_words_while_down_and_sends_each_once_when_back(
    full: bool,
) -> None:
    """Nothing goes to the room while the link is down; after a resume the held frames go live in order, after a full
    reconnect (new microphone sid) as one pre-connect buffer for the new track; every frame is sent exactly once."""
    room, capture, outages = FakeRoom(), FakeCapture(), Outages()
    backlog = MicBacklog(heard_speech_t=lambda: 1e9)  # all speech: nothing is skipped
    uplink = MicUplink(number=1, capture=capture, room=room, backlog=backlog, outages=outages)  # type: ignore[arg-type]
    task = asyncio.ensure_future(uplink.run())
    frames = iter(range(1, 1000))

    async def feed(n: int) -> None:
        for _ in range(n):
            i = next(frames)
            await capture.queue.put(frame(i / 100, value=i))
        while not capture.queue.empty():
            await asyncio.sleep(0)

    async def settle() -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    await feed(9)
    await settle()
    assert room.live == list(range(1, 10))
    outages.down(0.0)
    backlog.hold()
    await feed(30)
    await settle()
    assert room.live == list(range(1, 10)), "frames were sent while the link was down"
    if full:
        room.mic_sid = "TR_second"
    outages.up(1.0)
    backlog.release()
    room.subscribed.set()
    await feed(9)
    await settle()
    capture.queue.put_nowait(None)
    await asyncio.wait_for(task, TIMEOUT_S)
    if full:
        # The held frames (10..) and those that came meanwhile went as one buffer for the new track, the rest live.
        [(sid, buffered)] = room.buffers
        assert sid == "TR_second" and buffered >= 30
        assert room.live == [*range(1, 10), *range(10 + buffered, 49)], "every frame exactly once, in order"
    else:
        assert room.live == list(range(1, 49)) and not room.buffers


class SourceQueue:
    """The SDK's ``AudioSource`` queue as the uplink sees it, on a 10 ms tick: audio handed on waits there and WebRTC
    takes 10 ms of it each tick (when it is empty, WebRTC sends silence and the queue stays empty)."""

    def __init__(self) -> None:
        self.queued_s = 0.0

    def take(self, frames: int) -> None:
        """``frames`` 10 ms frames were handed to ``capture_frame``."""
        self.queued_s = round(self.queued_s + frames * 0.01, 3)

    def tick(self) -> None:
        """10 ms passed."""
        self.queued_s = max(0.0, round(self.queued_s - 0.01, 3))


def test_late_loops_leave_no_delay_behind_and_no_burst_is_lost() -> None:
    """Five minutes of 10 ms frames. Every 10 s the loop is late, longer each time (20 ms, then 25, ... up to 160 ms:
    the frames then arrive at once); every 5 s a 100 ms tone burst (loud, not speech) is captured. Counted in ticks,
    not timed: every burst frame is sent, and a burst between late loops waits no longer than the target and a chunk,
    the last 5 of them within 10 ms of the first 5 (with the source queue left out of the catch-up, each late loop's delay
    stayed there: the delay grew with the longest stall so far)."""
    queue = SourceQueue()
    backlog = MicBacklog(heard_speech_t=lambda: None, downstream_s=lambda: queue.queued_s)
    late: list[MicFrame] = []
    delays: list[float] = []  # per burst between late loops: its first frame's capture to WebRTC taking it (s)
    sent_burst_frames = 0
    for tick in range(30_000):
        t = tick / 100
        late.append(frame(t, value=8000 if tick % 500 < 10 else 3))
        stall_ticks = min(16, 2 + tick // 2000)
        if not 0 < tick % 1000 <= stall_ticks:  # the loop runs: every frame that waited reaches the backlog
            for waiting in late:
                backlog.push(waiting)
            late.clear()
        while (chunk := backlog.take_chunk(3)) is not None:
            for position, sent in enumerate(chunk):
                if int(sent.pcm[0]) == 8000:
                    sent_burst_frames += 1
                    if round(sent.t * 100) % 1000 == 500:  # a burst 5 s after a late loop, 5 s before the next
                        delays.append(round(t - sent.t + queue.queued_s + position * 0.01, 3))
            queue.take(len(chunk))
        queue.tick()
    assert sent_burst_frames == 60 * 10, "a burst was dropped"
    assert max(delays) <= LATENCY_TARGET_S + 0.03, delays
    first, last = float(np.median(delays[:5])), float(np.median(delays[-5:]))
    assert abs(last - first) <= 0.01, delays
