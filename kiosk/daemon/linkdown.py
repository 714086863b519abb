"""What a session does while its room's link is down: pause its clocks, and hold the visitor's words for later.

:class:`Outages` records when the SDK was reconnecting (``rtc.Room`` events ``reconnecting`` .. ``reconnected``), so
the silence and maximum-duration clocks leave that time out and the outage itself can be timed against
``session.network_lost_s``.

:class:`MicBacklog` sits between the session's capture and the room: every processed microphone frame goes in, and
the uplink takes frames out in ``capture_frame`` sized chunks. While the link is down it holds the frames (the last
:data:`HOLD_S` of them) instead of sending them into a dead transport. When the room is back the run sends what it
holds: after a *resume* the microphone track is the same one the agent already reads, so the held frames go live,
ahead of the new ones, and the uplink catches up by skipping frames in which the VAD heard nobody speak; after a
*full reconnect* the SDK republished the microphone under a new track sid with ``TF_PRECONNECT_BUFFER``, and the
agent (livekit-agents ``_ParticipantAudioInputStream``) waits for a pre-connect buffer for that track first, so the
held frames go there, as at the session's start. Frames already sent before the SDK noticed the loss (up to
livekit-server's 15 s ping timeout) are never sent again, so nothing the agent heard is heard twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from kiosk import session as sm
from kiosk.audio.frames import FRAME_MS, SAMPLE_RATE, MicFrame
from kiosk.audio.preroll import PreConnectAudio

log = logging.getLogger(__name__)

#: The most microphone audio held while the room reconnects (s): the visitor's last words before the room came back;
#: older ones an agent would answer out of context. 10 s of 16-bit 48 kHz mono is about 1 MB.
HOLD_S = 10.0
#: Behind by more than this (s): frames waiting here plus audio queued in the SDK's ``AudioSource``, the uplink drops
#: leading frames that are quiet (no sample beyond :data:`QUIET_PEAK`) and not speech, until it is back within it. A
#: loop that was late, or a link that was slow, would otherwise leave its delay in the uplink for the rest of the call
#: (both queues drain only as fast as they fill).
LATENCY_TARGET_S = 0.05
#: Behind by more than this (s), it drops leading frames without speech, quiet or not, until it has caught up.
CATCH_UP_S = 0.3
#: A microphone frame with no sample beyond this (about -50 dBFS) is quiet: nothing a listener would miss.
QUIET_PEAK = 100
#: The VAD judges 30 ms blocks: a frame is speech when the VAD heard speech at most this long before its end (s).
VAD_BLOCK_S = 0.03
#: The frames this long (s) before a speech frame count as speech too: a word's first sounds precede the VAD's onset,
#: and short pauses inside a sentence are kept.
SPEECH_MARGIN_S = 0.3
_MARGIN_FRAMES = int(SPEECH_MARGIN_S * 1000) // FRAME_MS


class Outages:
    """When the room's link was down in one session (monotonic seconds)."""

    def __init__(self) -> None:
        self._spans: list[tuple[float, float]] = []
        #: Since when the link has been down, or None while it is up.
        self.down_since: float | None = None

    @property
    def count(self) -> int:
        """How many outages began in this session."""
        return len(self._spans) + (self.down_since is not None)

    def down(self, now: float) -> None:
        """The SDK began reconnecting at ``now`` (a second report of the same outage changes nothing)."""
        if self.down_since is None:
            self.down_since = now

    def up(self, now: float) -> float:
        """The room is back at ``now``; returns how long the outage lasted (s), 0 when none was under way."""
        if self.down_since is None:
            return 0.0
        start, self.down_since = self.down_since, None
        self._spans.append((start, now))
        return now - start

    def paused(self, since: float, now: float) -> float:
        """Seconds of ``[since, now]`` the link was down: time the session's clocks leave out."""
        spans = [*self._spans, (self.down_since, now)] if self.down_since is not None else self._spans
        return sum(max(0.0, min(end, now) - max(start, since)) for start, end in spans)


class MicBacklog:
    """Microphone frames not sent yet; ``heard_speech_t()`` is the VAD's time of the last speech (or None)."""

    def __init__(
        self,
        *,
        heard_speech_t: Callable[[], float | None],
        hold_s: float = HOLD_S,
        downstream_s: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """``downstream_s()``: seconds of audio already handed on and not sent yet (the ``AudioSource``'s queue)."""
        self._heard_speech_t = heard_speech_t
        self._downstream_s = downstream_s
        # Each frame with its speech mark (set later when the VAD hears speech right after it) and whether it is quiet.
        self._frames: deque[tuple[MicFrame, list[bool], bool]] = deque(maxlen=max(1, int(hold_s * 1000) // FRAME_MS))
        self._changed = asyncio.Event()
        self._closed = False
        #: True while the link is down: frames are kept, none is handed out.
        self.holding = False
        #: Frames that fell out of a full backlog, and frames skipped to catch up (counts).
        self.dropped = 0
        self.skipped = 0

    @property
    def held_s(self) -> float:
        """Seconds of audio waiting."""
        return len(self._frames) * FRAME_MS / 1000

    def push(self, frame: MicFrame) -> None:
        """Add the next frame; marks it, and the frames just before it, as speech when the VAD heard some."""
        heard = self._heard_speech_t()
        speech = heard is not None and heard >= frame.t - VAD_BLOCK_S
        if speech:
            for _, mark, _ in list(self._frames)[-_MARGIN_FRAMES:]:
                mark[0] = True
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        pcm = frame.pcm
        quiet = len(pcm) == 0 or (int(pcm.max()) < QUIET_PEAK and int(pcm.min()) > -QUIET_PEAK)
        self._frames.append((frame, [speech], quiet))
        self._changed.set()

    def hold(self) -> None:
        """The link is down: keep every frame until :meth:`release`."""
        self.holding = True

    def release(self) -> None:
        """The link is back: hand frames out again."""
        self.holding = False
        self._changed.set()

    def close(self) -> None:
        """No more frames will come: :meth:`next_chunk` returns None once the rest is handed out."""
        self._closed = True
        self._changed.set()

    async def next_chunk(self, frames: int) -> list[MicFrame] | None:
        """The next ``frames`` frames to send, once the link is up and they are there; None after :meth:`close`.

        Behind by more than :data:`LATENCY_TARGET_S` (counting the ``AudioSource``'s queue), leading quiet frames
        nobody spoke in are skipped first; behind by more than :data:`CATCH_UP_S`, leading frames nobody spoke in.
        """
        while True:
            if (chunk := self.take_chunk(frames)) is not None:
                return chunk
            if self._closed and not self._frames:
                return None
            self._changed.clear()
            await self._changed.wait()

    def take_chunk(self, frames: int) -> list[MicFrame] | None:
        """What :meth:`next_chunk` returns when it does not have to wait for frames; None when it would wait."""
        if self.holding:
            return None
        self._catch_up()
        if len(self._frames) >= frames or (self._closed and self._frames):
            return [self._frames.popleft()[0] for _ in range(min(frames, len(self._frames)))]
        return None

    def take_all(self) -> PreConnectAudio:
        """Everything waiting, as one buffer for the agent (after a full reconnect)."""
        frames = [frame for frame, _, _ in self._frames]
        self._frames.clear()
        pcm = np.concatenate([f.pcm for f in frames]).tobytes() if frames else b""
        return PreConnectAudio(pcm=pcm, duration_s=len(pcm) / 2 / SAMPLE_RATE)

    def _catch_up(self) -> None:
        frames = self._frames
        downstream = int(self._downstream_s() * 1000) // FRAME_MS  # frames already handed to the AudioSource
        target = max(0, int(LATENCY_TARGET_S * 1000) // FRAME_MS - downstream)
        while len(frames) > target and frames[0][2] and not frames[0][1][0]:
            frames.popleft()
            self.skipped += 1
        behind = max(0, int(CATCH_UP_S * 1000) // FRAME_MS - downstream)
        while len(frames) > behind and not frames[0][1][0]:
            frames.popleft()
            self.skipped += 1


class SessionLink:
    """Session ``number``'s link: outages counted once, the microphone held while one lasts.

    ``dispatch`` takes the ``Reconnecting`` / ``Reconnected`` the link watch finds (the SDK's own go through
    :meth:`sdk_saw`); ``room_link_up()`` says whether the room's transport is up; ``clock`` is monotonic (s).
    """

    def __init__(
        self,
        *,
        number: int,
        backlog: MicBacklog,
        dispatch: Callable[[sm.Event], None],
        room_link_up: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self._number = number
        self._backlog = backlog
        self._dispatch = dispatch
        self._room_link_up = room_link_up
        self._now = clock
        #: When the link was down; the session's clocks leave that time out.
        self.outages = Outages()
        #: Set when an outage begins or ends: the session's deadlines move.
        self.moved = asyncio.Event()

    def sdk_saw(self, event: sm.Reconnecting | sm.Reconnected) -> bool:
        """The SDK reports the room reconnecting or back; False when the link watch had already counted it."""
        if isinstance(event, sm.Reconnecting):
            return self._down(self._now())
        return self._up(self._now())

    def watch_saw(self, down: bool, since: float) -> None:
        """The link watch's verdict: nothing has arrived from the room since ``since`` (``down``), or traffic again."""
        if down:
            log.warning(
                "session %d: nothing has arrived from the room for %.1f s: the link is down",
                self._number,
                self._now() - since,
            )
            if self._down(since):
                self._dispatch(sm.Reconnecting())
        elif self._room_link_up() and self._up(self._now()):
            # Back before the SDK noticed the outage: the same transport carries on.
            self._dispatch(sm.Reconnected())

    def _down(self, since: float) -> bool:
        """Count an outage from ``since`` and hold the microphone; False when one is already counted."""
        if self.outages.down_since is not None:
            return False
        self.outages.down(since)
        self._backlog.hold()
        self.moved.set()
        return True

    def _up(self, now: float) -> bool:
        """End the outage under way at ``now`` and send what the microphone held; False when none was."""
        if self.outages.down_since is None:
            return False
        lasted = self.outages.up(now)
        self._backlog.release()
        self.moved.set()
        log.info("session %d: the room is back after %.1f s; same broker session", self._number, lasted)
        return True
