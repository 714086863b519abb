"""The span of device time over which the echo canceller is fed both of its streams.

The APM runs only while a session captures audio (or a frame subscriber listens), and both of its streams must start
and stop at the same instant of the devices' time, not when their frames happen to reach the loop: WebRTC's AEC3
pairs the microphone with the speaker by counting 10 ms frames, and an unequal count is, to it, a new echo path
delay, on which it resets to its initial state and, for seconds of the agent's speech, suppresses the visitor's
words as possible echo. So the span opens and closes on the engine's clock, each frame is judged by its own capture
or play time, and the two counts are made equal before the next span opens.
"""

from __future__ import annotations


class CancellerSpan:
    """When the canceller is fed: ``(opened, closed]`` on the engine's clock (s), and how many frames each stream
    gave it since the span opened."""

    def __init__(self) -> None:
        self.opened: float | None = None
        self.closed: float | None = None
        self.mic_frames = 0
        self.speaker_frames = 0

    @property
    def is_open(self) -> bool:
        """Whether the span has opened and not closed since."""
        return self.opened is not None and self.closed is None

    def holds(self, t: float) -> bool:
        """Whether the frame captured or played at ``t`` belongs to the canceller."""
        return self.opened is not None and t > self.opened and (self.closed is None or t <= self.closed)

    def follow(self, processing: bool, now: float) -> int | None:
        """Open the span at ``now`` when processing started, close it when it stopped.

        Returns, on opening, by how many frames the last span's microphone count exceeded its speaker count (negative:
        fewer), for the caller to make up with silence: each device calls back at its own phase, so one span holds n
        frames of one stream and n + 1 of the other, which would add up over sessions. None when it did not open.
        """
        if processing and not self.is_open:
            lag = self.mic_frames - self.speaker_frames
            self.opened, self.closed = now, None
            self.mic_frames = self.speaker_frames = 0
            return lag
        if not processing and self.is_open:
            self.closed = now
        return None
