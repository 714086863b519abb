"""Microphone capture: the PortAudio callback hands blocks to the loop, the loop makes 48 kHz 10 ms frames.

While the engine is idle the callback hands blocks over nine at a time (one loop wake-up per 90 ms: voice wake
decides 80 ms later at most, and the blocks still held at a press follow with the next hand-off); in a call, three
at a time (30 ms: the size the session publishes per ``capture_frame``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kiosk.audio.devices import StreamParams
from kiosk.audio.frames import FRAME_SAMPLES, SAMPLE_RATE, Framer, Pcm, Resampler
from kiosk.audio.streams import AudioStream, Block, StreamFactory, post

log = logging.getLogger(__name__)

#: ``sink(pcm, t)``: a raw (unprocessed) 48 kHz mono 10 ms frame and the time its last sample arrived.
FrameSink = Callable[[Pcm, float], None]
#: Blocks handed over at once while idle (a multiple of the VAD's 30 ms frame).
IDLE_HAND_OFF_BLOCKS = 9
#: Blocks handed over at once while a session captures or a subscriber listens.
CALL_HAND_OFF_BLOCKS = 3


class Capture:
    """One input stream kept open; counts overflows and blocks dropped because the loop fell behind."""

    def __init__(
        self,
        *,
        factory: StreamFactory,
        loop: asyncio.AbstractEventLoop,
        params: StreamParams,
        channel: int,
        sink: FrameSink,
        idle: Callable[[], bool],
        on_finished: Callable[[], None],
        clock: Callable[[], float],
        max_pending_s: float,
    ) -> None:
        self.params = params
        self._loop = loop
        self._channel = channel
        self._sink = sink
        self._idle = idle
        # Callback side only: blocks not handed over yet, with their overflow flags and arrival times.
        self._pending: list[tuple[Pcm, bool, float]] = []
        self._clock = clock
        self._blocksize = params.samplerate // 100
        capacity = max(2, int(max_pending_s * params.samplerate / self._blocksize))
        self._queue: asyncio.Queue[tuple[Pcm, float]] = asyncio.Queue(maxsize=capacity)
        self._resampler = Resampler(params.samplerate, SAMPLE_RATE)
        self._framer = Framer()
        self.overflows = 0
        self.dropped_blocks = 0
        self.blocks = 0
        self.last_block_t: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._stream: AudioStream = factory.open(
            kind="input",
            device=params.device.index,
            samplerate=params.samplerate,
            channels=params.channels,
            blocksize=self._blocksize,
            callback=self._callback,
            on_finished=lambda: post(loop, on_finished),
        )

    @property
    def latency(self) -> float:
        """PortAudio's reported input latency in seconds."""
        return self._stream.latency

    @property
    def measured_latency(self) -> float | None:
        """The input latency the callback's timing shows (s), when the host API tells."""
        return self._stream.measured_latency

    def prime(self) -> None:
        """Loop side, before :meth:`start_stream`: start the frame maker."""
        self._task = self._loop.create_task(self._run(), name="audio-capture")

    def start_stream(self) -> None:
        """Start the PortAudio stream (blocking: call it off the event loop)."""
        self._stream.start()

    def stop(self) -> None:
        """Loop side: stop the frame maker (and the callback's hand-offs)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    def close(self) -> None:
        """Close the PortAudio stream; callbacks stop (blocking: call it off the event loop)."""
        self._stream.close()

    def _callback(self, data: Block, overflow: bool) -> None:
        # PortAudio thread: copy the chosen channel and hand it over; nothing here may block.
        if self._stopped:
            return  # closing: hand nothing more to the loop, so PortAudio can stop this thread at once
        self._pending.append((data[:, self._channel].copy(), overflow, self._clock()))
        if len(self._pending) >= (IDLE_HAND_OFF_BLOCKS if self._idle() else CALL_HAND_OFF_BLOCKS):
            blocks, self._pending = self._pending, []
            post(self._loop, self._arrive, blocks)

    def _arrive(self, blocks: list[tuple[Pcm, bool, float]]) -> None:
        for block, overflow, t in blocks:
            self.blocks += 1
            self.last_block_t = t
            if overflow:
                self.overflows += 1
            try:
                self._queue.put_nowait((block, t))
            except asyncio.QueueFull:
                self.dropped_blocks += 1

    async def _run(self) -> None:
        while True:
            block, t = await self._queue.get()
            frames = self._framer.push(self._resampler.push(block))
            # The last sample of the block arrived at t; earlier frames are older by what follows them.
            held = self._framer.pending
            for i, pcm in enumerate(frames):
                after = (len(frames) - 1 - i) * FRAME_SAMPLES + held
                self._sink(pcm, t - after / SAMPLE_RATE)
