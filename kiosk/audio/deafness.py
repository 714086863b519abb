"""Noticing a deaf microphone or a mute speaker: a stream the sound server moved elsewhere, or a capture that
delivers only zeros.

Why the sound server is asked, and not told. When a PulseAudio source vanishes (a USB microphone pulled, a null sink
unloaded), the server moves every capture stream on it to another source, often the speaker's monitor, and leaves
it there when the microphone comes back; PipeWire's pulse server on Raspberry Pi OS bookworm does the same. The
stream keeps delivering audio, so PortAudio and the stall check see nothing wrong, and the kiosk hears the agent as
a visitor. PulseAudio's ``PA_STREAM_DONT_MOVE`` flag would make the server kill the stream instead, but the ALSA
pulse plugin (``type pulse`` in an asoundrc, which PortAudio opens) has no option to set stream flags, and
PipeWire's own ALSA plugin has a different knob (``node.dont-reconnect``). Both servers, however, list every capture
stream as a *source output* over the pulse protocol, with the client's ``application.process.id``. So the watch asks
the server (through :mod:`pulsectl`, a ctypes binding of libpulse, which the ALSA pulse plugin needs anyway) which
sources this process's capture streams are on, learns the source the configured device opened on, and calls the
stream failed as soon as it is anywhere else. The supervisor (:mod:`kiosk.audio.supervisor`) then closes it and
reopens the configured device with backoff; while the configured source is gone the reopen fails, and a session
that stays without its microphone past the observers' grace ends as ``audio_device``. A playback stream whose sink
vanished (a USB speaker pulled) is moved the same way, to HDMI or the headphone jack, and plays on where nobody
hears it: the watch holds it to the sink it opened on (sink inputs), with the same consequences.

Digital silence. A live microphone always carries some noise; a capture that delivers only zero samples is
muted or broken. (Raw samples are judged, within ``DIGITAL_ZERO``: the echo canceller and noise suppressor add a
little noise even to zeros.) While a session is live (:meth:`DeafnessWatch.arm`), a zero run longer than
``audio.digital_silence_s`` makes the watch reopen the input once (a wedged capture comes back with its noise). A
second run in the same session, on a stream that still delivers its blocks on time (a stream that does not is
failed by the supervisor's stall check), is the device's own mute: a USB speakerphone's mute button sends exact
zeros. That visitor chose not to be heard, so it is shown as muted (:attr:`DeafnessWatch.device_muted`, the
``on_device_mute`` callback: LEDs, ``kiosk status``), never as a failed device; the session's silence end still
applies. The first sample above ``DIGITAL_ZERO`` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kiosk.audio.health import AudioHealthEvent

if TYPE_CHECKING:
    from kiosk.audio.frames import MicFrame
    from kiosk.audio.recovery import Direction

log = logging.getLogger(__name__)

#: How often the sound server is asked where the capture stream is (s): a pulse round trip, well under 1 ms.
CHECK_INTERVAL_S = 1.0
#: Samples at most this far from zero count as digital silence: resampling exact zeros leaves +-1 LSB, while any
#: analog microphone's noise floor (about -70 dBFS and up) is tens of LSB.
DIGITAL_ZERO = 2
#: After the sound server could not be reached, how long until it is asked again (s).
RETRY_CONNECT_S = 30.0


class SourceProbe(Protocol):
    """Where this process's streams are (blocking: the watch calls it off the event loop)."""

    def capture_sources(self) -> list[str] | None:
        """Names of the sources this process's capture streams are on; None when no sound server answers."""
        ...

    def playback_sinks(self) -> list[str] | None:
        """Names of the sinks this process's playback streams are on; None when no sound server answers."""
        ...

    def close(self) -> None:
        """Release the connection to the sound server."""
        ...


class WatchedEngine(Protocol):
    """What the watch needs of the audio engine."""

    @property
    def input(self) -> Direction:
        """The microphone's direction (its stream, device and state)."""
        ...

    @property
    def output(self) -> Direction:
        """The speaker's direction."""
        ...

    def subscribe_raw_frames(self, callback: Callable[[MicFrame], None]) -> Callable[[], None]:
        """Get every raw (unprocessed) mic frame on the loop; returns the unsubscribe function."""
        ...

    def report(self, event: AudioHealthEvent) -> None:
        """Tell health subscribers about a device failure."""
        ...


class PulseProbe:
    """A :class:`SourceProbe` over the pulse protocol (PulseAudio or PipeWire's pulse server), via pulsectl.

    It reaches the server the ALSA pulse plugin reaches (``PULSE_SERVER``, else ``XDG_RUNTIME_DIR/pulse/native``).
    Streams are matched by the ``application.process.id`` property libpulse sets for every client.
    """

    def __init__(self, *, pid: int | None = None, server: str | None = None) -> None:
        self._pid = str(pid if pid is not None else os.getpid())
        self._server = server
        self._pulse: Any = None
        self._retry_at = 0.0

    def capture_sources(self) -> list[str] | None:
        """Source names of this process's source outputs, or None (no server now; retried after 30 s)."""
        return self._where("source")

    def playback_sinks(self) -> list[str] | None:
        """Sink names of this process's sink inputs, or None (no server now; retried after 30 s)."""
        return self._where("sink")

    def _where(self, kind: str) -> list[str] | None:
        import pulsectl

        if self._pulse is None:
            if time.monotonic() < self._retry_at:
                return None
            try:
                self._pulse = pulsectl.Pulse("kiosk-deafness-watch", server=self._server)
            except pulsectl.PulseError as exc:
                self._retry_at = time.monotonic() + RETRY_CONNECT_S
                log.debug("no pulse server to ask where the audio streams are: %s", exc)
                return None
        try:
            if kind == "source":
                names = {device.index: device.name for device in self._pulse.source_list()}
                streams = [(out.source, out.proplist) for out in self._pulse.source_output_list()]
            else:
                names = {device.index: device.name for device in self._pulse.sink_list()}
                streams = [(inp.sink, inp.proplist) for inp in self._pulse.sink_input_list()]
        except pulsectl.PulseError as exc:
            log.debug("the pulse server stopped answering: %s", exc)
            self.close()
            return None
        return [
            names.get(index, f"#{index}")
            for index, props in streams
            if props.get("application.process.id") == self._pid
        ]

    def close(self) -> None:
        """Disconnect (the next call connects again)."""
        if self._pulse is not None:
            self._pulse.close()
            self._pulse = None


class DeafnessWatch:
    """A loop task that checks the input once per ``interval_s``; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        engine: WatchedEngine,
        probe: SourceProbe | None,
        digital_silence_s: float,
        interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        on_device_mute: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_device_mute(muted)`` is called on the loop when the device's own mute is noticed or ends."""
        self._engine = engine
        self._probe = probe
        self._digital_silence_s = digital_silence_s
        self._interval_s = interval_s
        self._clock = clock
        # pulsectl's connection is used from this one thread only.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pulse-probe")
        self._task: asyncio.Task[None] | None = None
        self._stream: object | None = None
        #: The source the configured input device opened on (learned from its first stream).
        self.expected_source: str | None = None
        #: The sink the configured output device opened on (learned from its first stream).
        self.expected_sink: str | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._sound_t = 0.0
        self._silence_reopened = False
        self._on_device_mute = on_device_mute
        #: Whether the microphone sends exact zeros on time after a reopen: muted at the device (see above).
        self.device_muted = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start checking (the first check at once: the source the stream opened on is learned from it)."""
        self._task = loop.create_task(self._run(), name="deafness-watch")

    async def stop(self) -> None:
        """Stop checking and release the sound server connection."""
        self.disarm()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._probe is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._probe.close)
        self._executor.shutdown(wait=False)

    def arm(self) -> None:
        """A session went live: judge digital silence from now on (idempotent)."""
        if self._unsubscribe is not None or self._digital_silence_s <= 0:
            return
        self._sound_t = self._clock()
        self._silence_reopened = False
        self._unsubscribe = self._engine.subscribe_raw_frames(self._on_frame)

    def disarm(self) -> None:
        """The session is over: stop judging digital silence (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._set_device_muted(False)

    def _on_frame(self, frame: MicFrame) -> None:
        if np.any(np.abs(frame.pcm) > DIGITAL_ZERO):
            self._sound_t = frame.t
            self._set_device_muted(False)

    def _set_device_muted(self, muted: bool) -> None:
        if muted == self.device_muted:
            return
        self.device_muted = muted
        log.info("the microphone %s", "is muted at the device (exact zeros)" if muted else "sends sound again")
        if self._on_device_mute is not None:
            self._on_device_mute(muted)

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                # The watch must outlive anything the sound server throws at it.
                log.exception("the microphone watch failed")
            await asyncio.sleep(self._interval_s)

    async def check(self) -> None:
        """One round: where the capture and playback streams are, and how long capture has been digitally silent."""
        if self._probe is not None:
            found = await self._placed(self._engine.input, self._probe.capture_sources, self.expected_source)
            self.expected_source = found or self.expected_source
            found = await self._placed(self._engine.output, self._probe.playback_sinks, self.expected_sink)
            self.expected_sink = found or self.expected_sink
        direction = self._engine.input
        stream = direction.stream
        if stream is None or direction.failed is not None:
            return
        now = self._clock()
        if stream is not self._stream:
            # A new stream: its own silence clock.
            self._stream = stream
            self._sound_t = max(self._sound_t, now)
        if self._unsubscribe is not None and now - self._sound_t >= self._digital_silence_s:
            self._digital_silence(direction, now)

    async def _placed(
        self, direction: Direction, ask: Callable[[], list[str] | None], expected: str | None
    ) -> str | None:
        """Fail ``direction`` if the sound server moved its stream off ``expected``; return the device it is on."""
        stream = direction.stream
        if stream is None or direction.failed is not None:
            return None
        where = await asyncio.get_running_loop().run_in_executor(self._executor, ask)
        if direction.stream is not stream or not where:
            return None  # reopened meanwhile (judged next round), or no answer
        kind, noun = ("capture", "source") if direction.name == "input" else ("playback", "sink")
        if expected is None:
            log.info("audio %s: the %s stream is on %s %r", direction.name, kind, noun, where[0])
            return where[0]
        if expected not in where:
            direction.failed = (
                f"the sound server moved the {kind} stream to {noun} {where[0]!r}; the configured device is on "
                f"{expected!r}"
            )
        return None

    def _digital_silence(self, direction: Direction, now: float) -> None:
        problem = f"digital silence (only zero samples) for {now - self._sound_t:.0f} s while live"
        self._sound_t = now
        if not self._silence_reopened:
            self._silence_reopened = True
            direction.failed = problem
            return
        if not self.device_muted:
            log.warning(
                "audio input device %r: %s, also after reopening it, while its blocks arrive on time: taken as the "
                "device's own mute (a speakerphone's mute button), not a failure",
                direction.device,
                problem,
            )
        self._set_device_muted(True)
