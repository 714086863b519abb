"""Speaker output: the loop keeps a short queue of mixed audio, the PortAudio callback plays it.

The callback reports each block it actually played (silence included) back to the loop, which feeds exactly
that to the echo canceller's reverse stream and tops the queue up again. The queue is a ``deque`` the loop only
appends to and the callback only pops from, so no lock is shared.

While nothing plays and no echo canceller needs the reverse stream (an idle kiosk), the playback is *quiet*: the
callback fills silence itself and hands nothing to the loop, so an idle speaker costs what its stream costs.
:meth:`Playback.wake` (audio pushed to the mixer, a session starting) ends the quiet.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from kiosk.audio.devices import StreamParams
from kiosk.audio.frames import FRAME_SAMPLES, SAMPLE_RATE, Framer, Pcm, Resampler
from kiosk.audio.mixer import Mixer
from kiosk.audio.streams import AudioStream, Block, StreamFactory, post

log = logging.getLogger(__name__)

#: Played blocks handed to the loop at once: one loop wake-up per 30 ms instead of per 10 ms block.
HAND_OFF_BLOCKS = 3
#: Mixed audio kept queued ahead of the callback: a hand-off's worth, plus 30 ms for a busy loop to answer in.
AHEAD_MS = 60
#: Queued audio below which the callback hands off at once instead of waiting for a full hand-off.
LOW_WATER_MS = 20
#: Played blocks waiting for the reverse stream before the oldest are dropped.
MAX_REVERSE_BLOCKS = 100


class Playback:
    """One output stream fed from the mixer.

    Counts ``underruns``, PortAudio's output underflow flag (the device ran dry: ALSA's underrun, an xrun), and
    ``starved`` blocks (the kiosk's own queue was empty when the callback came: it played silence).
    """

    def __init__(
        self,
        *,
        factory: StreamFactory,
        loop: asyncio.AbstractEventLoop,
        params: StreamParams,
        mixer: Mixer,
        reverse: Callable[[Pcm], None],
        needs_reverse: Callable[[], bool],
        feeds_reverse: Callable[[float], bool],
        on_audible: Callable[[], None],
        on_finished: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.params = params
        self._loop = loop
        self._mixer = mixer
        self._reverse = reverse
        self._needs_reverse = needs_reverse
        self._feeds_reverse = feeds_reverse
        self._on_audible = on_audible
        self._clock = clock
        rate = params.samplerate
        self._blocksize = rate // 100
        self._ahead = AHEAD_MS * rate // 1000
        self._low_water = LOW_WATER_MS * rate // 1000
        self._to_device = Resampler(SAMPLE_RATE, rate)
        self._from_device = Resampler(rate, SAMPLE_RATE)
        self._framer = Framer()
        self._queue: deque[Pcm] = deque()
        # Callback side only: played blocks not handed to the loop yet.
        self._pending: list[tuple[Pcm, float]] = []
        self._carry: Pcm = np.zeros(0, dtype=np.int16)
        self._played_blocks: deque[Pcm] = deque(maxlen=MAX_REVERSE_BLOCKS)
        self._wake = asyncio.Event()
        # Written by one side only: queued = appended - consumed.
        self._appended = 0
        self._consumed = 0
        # Loop side: nothing to play and no reverse stream wanted; the callback then plays silence on its own.
        self._quiet = False
        self.starved = 0
        # Written by the callback only.
        self.underruns = 0
        self.blocks = 0
        #: Blocks handed to the loop (each one wakes it).
        self.posted = 0
        self.last_block_t: float | None = None
        self.reverse_dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._stream: AudioStream = factory.open(
            kind="output",
            device=params.device.index,
            samplerate=rate,
            channels=params.channels,
            blocksize=self._blocksize,
            callback=self._callback,
            on_finished=lambda: post(loop, on_finished),
        )

    @property
    def latency(self) -> float:
        """PortAudio's reported output latency in seconds."""
        return self._stream.latency

    @property
    def measured_latency(self) -> float | None:
        """The output latency the callback's timing shows (s), when the host API tells."""
        return self._stream.measured_latency

    def ahead_s(self) -> float:
        """Seconds between audio mixed now and its sound at the speaker: what is queued ahead of it plus the
        device's output latency (measured from the callback's timing when the host API tells, else PortAudio's)."""
        queued = max(0, self._appended - self._consumed) / self.params.samplerate
        latency = self.measured_latency
        return queued + (latency if latency is not None else self.latency)

    def prime(self) -> None:
        """Loop side, before :meth:`start_stream`: queue the first audio and start the reverse-stream feeder."""
        self._top_up()
        self._task = self._loop.create_task(self._feed_reverse(), name="audio-reverse")

    def start_stream(self) -> None:
        """Start the PortAudio stream (blocking: call it off the event loop)."""
        self._stream.start()

    @property
    def quiet(self) -> bool:
        """True while the callback plays silence without involving the loop."""
        return self._quiet

    def wake(self) -> None:
        """Loop side: there is audio to play or a reverse stream to feed; end the quiet."""
        if self._quiet and not self._stopped:
            self._top_up()

    def stop(self) -> None:
        """Loop side: stop feeding the reverse stream (and the callback's hand-offs)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    def close(self) -> None:
        """Close the PortAudio stream (blocking: call it off the event loop)."""
        self._stream.close()

    def _callback(self, out: Block, underflow: bool) -> None:
        # PortAudio thread: copy out what the loop queued, pad with silence, report what was played.
        if self._stopped:
            out.fill(0)  # closing: silence, and nothing more handed to the loop
            return
        n = out.shape[0]
        self.blocks += 1
        self.last_block_t = self._clock()
        if underflow:
            self.underruns += 1
        if self._quiet and not self._queue and len(self._carry) == 0:
            out.fill(0)
            if self._pending:  # the last played blocks still go over: the echo canceller's span may include them
                blocks, self._pending = self._pending, []
                self.posted += 1
                post(self._loop, self._played, blocks)
            return
        mono = np.zeros(n, dtype=np.int16)
        filled = 0
        chunk = self._carry
        while filled < n:
            if len(chunk) == 0:
                try:
                    chunk = self._queue.popleft()
                except IndexError:
                    break
            use = min(n - filled, len(chunk))
            mono[filled : filled + use] = chunk[:use]
            chunk = chunk[use:]
            filled += use
        self._carry = chunk
        self._consumed += filled
        if filled < n and not self._quiet:
            self.starved += 1
        out[:] = mono[:, None]
        self._pending.append((mono, self.last_block_t))
        # Hand off early when the queue runs low (PortAudio catching up after an underflow calls back in a burst).
        if len(self._pending) >= HAND_OFF_BLOCKS or self._appended - self._consumed < self._low_water:
            blocks, self._pending = self._pending, []
            self.posted += 1
            post(self._loop, self._played, blocks)

    def _played(self, blocks: list[tuple[Pcm, float]]) -> None:
        fed = False
        for block, t in blocks:
            # By the time it was played, not by when it reached the loop: the echo canceller gets the speaker's
            # blocks of exactly the span it gets the microphone's (``AudioEngine.feeds``).
            if self._feeds_reverse(t):
                if len(self._played_blocks) == self._played_blocks.maxlen:
                    self.reverse_dropped += 1
                self._played_blocks.append(block)
                fed = True
        if fed:
            self._wake.set()
        self._top_up()

    def _top_up(self) -> None:
        if not self._mixer.active and not self._needs_reverse():
            self._quiet = True
            return
        # Not quiet from here: a wake() from inside the mix (on_audible) must not top up again in the middle of it.
        self._quiet = False
        while self._appended - self._consumed < self._ahead:
            pcm, audible = self._mixer.mix(HAND_OFF_BLOCKS * FRAME_SAMPLES)
            if audible:
                self._on_audible()
            device = self._to_device.push(pcm)
            if len(device) == 0:
                # The resampler is still filling: keep the device fed with silence meanwhile.
                device = np.zeros(self._blocksize, dtype=np.int16)
            self._queue.append(device)
            self._appended += len(device)
        self._quiet = False

    async def _feed_reverse(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._played_blocks:
                block = self._played_blocks.popleft()
                for frame in self._framer.push(self._from_device.push(block)):
                    self._reverse(frame)
                # Long backlogs (a device running faster than real time) must not starve the loop.
                await asyncio.sleep(0)
