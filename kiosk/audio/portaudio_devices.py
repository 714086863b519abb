"""The two PortAudio devices the engine plays and records through: open, start, close, reopen, health events.

Every PortAudio call that can block (device queries, open, start, close, rescan) runs on one
:class:`~kiosk.audio.worker.PortAudioThread`, one at a time (PortAudio's API is not thread-safe) and each within a
bound, never on the event loop: a USB device that hangs must not stop the loop, its watchdog pings or a session's
broker end. A device that fails is reopened by the :class:`~kiosk.audio.supervisor.Supervisor` with jittered backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kiosk.audio.capture import Capture
from kiosk.audio.devices import at_rate, resolve, stream_params
from kiosk.audio.frames import SAMPLE_RATE, Pcm
from kiosk.audio.health import AudioHealthEvent, DeviceHealth
from kiosk.audio.mic_path import emit, subscribe
from kiosk.audio.mixer import Mixer
from kiosk.audio.playback import Playback
from kiosk.audio.recovery import Direction, Stream
from kiosk.audio.streams import StreamFactory
from kiosk.audio.supervisor import POLL_S, Supervisor
from kiosk.audio.worker import STUCK, CallTimeout, PortAudioThread, hung_calls
from kiosk.config import AudioConfig
from kiosk.errors import AudioDeviceError
from kiosk.reasons import FailureReason

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long closing the streams may take at shutdown before a hanging device is left behind (s).
CLOSE_BUDGET_S = 10.0
#: Bounds on one PortAudio call (s); a call still running then is abandoned (:mod:`kiosk.audio.worker`) and the
#: device is failed as audio_device. Opening covers the device lookup, the rate check (``Pa_IsFormatSupported``
#: opens the PCM too) and ``Pa_OpenStream``: each takes 0.01 s on PulseAudio and well under 0.5 s on USB audio; 5 s
#: leaves a loaded 2-core Pi ten times that. Starting: PortAudio's ALSA host gives its callback thread 1 s to start
#: (``PaUnixThread_New(..., 1., ...)`` in ``pa_linux_alsa.c``) and fails the start with paTimedOut after it, so a
#: start past 3 s is stuck, not slow. Closing joins the callback thread, a few ms; 3 s as for starting.
OPEN_TIMEOUT_S = 5.0
START_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 3.0
#: A rescan re-initialises PortAudio, which probes every device (0.1-1 s).
RESCAN_TIMEOUT_S = 10.0
#: After this many abandoned calls on one direction it is not tried again until the kiosk restarts: each hung call
#: leaves a thread and a stream behind for the life of the process.
MAX_HUNG_PER_DIRECTION = 3


class DeviceHung(AudioDeviceError):
    """A PortAudio call on the device did not return within its bound (see ``OPEN_TIMEOUT_S``)."""


@dataclass(frozen=True)
class StreamHooks:
    """What the streams this module opens are connected to (the engine's microphone path and mixer)."""

    #: Capture: every 10 ms microphone frame (``Pcm``, 48 kHz) and its capture time (s), on the loop.
    sink: Callable[[Pcm, float], None]
    #: Whether a session (or a frame subscriber) uses the microphone now.
    processing: Callable[[], bool]
    #: Whether microphone frames go through the APM and the speaker feeds its reverse stream: processing, unless the
    #: kiosk is short of CPU while its speaker is silent (see ``MicPath.lean``).
    cancelling: Callable[[], bool]
    #: Playback: what the speaker plays.
    mixer: Mixer
    #: Playback: each block the device played, for the canceller's reverse stream.
    reverse: Callable[[Pcm], None]
    #: Playback: whether the block played at a time (s) goes to the canceller (its span).
    feeds_reverse: Callable[[float], bool]
    #: Playback: the kiosk's own output became audible (voice wake is gated).
    on_audible: Callable[[], None]
    #: After a device opened (the echo choice and the latencies follow the devices).
    on_opened: Callable[[], None]


def _nothing() -> None:
    """A PortAudio-thread call that returns once every call before it has."""


def _close_late(stream: Capture | Playback) -> None:
    """An open that returned after it was abandoned: close what it opened (on the thread it returned on)."""
    stream.close()


class PortAudioDevices:
    """The microphone (``input``) and the speaker (``output``): each a :class:`Direction` and its open stream."""

    def __init__(
        self,
        *,
        config: AudioConfig,
        hooks: StreamHooks,
        stream_factory: StreamFactory | None,
        clock: Callable[[], float],
        rng: Callable[[], float],
        max_pending_s: float,
        short_of_cpu: Callable[[float], bool] = lambda within_s: False,
    ) -> None:
        """Open devices of ``config`` through ``stream_factory`` (None: PortAudio's, made on the PortAudio thread).

        ``clock`` (s) and ``rng`` drive the reopen backoff; ``max_pending_s`` bounds the microphone blocks queued
        for the loop; ``short_of_cpu(within_s)`` (:meth:`kiosk.cpuwatch.CpuWatch.short`) keeps the supervisor from
        judging a stall that the kiosk's own CPU shortage explains.
        """
        self.config = config
        self.input = Direction("input")
        self.output = Direction("output")
        self._hooks = hooks
        self._factory = stream_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock = clock
        self._rng = rng
        self._max_pending_s = max_pending_s
        self._short_of_cpu = short_of_cpu
        self._health_subscribers: list[Callable[[AudioHealthEvent], None]] = []
        self._supervisor: Supervisor | None = None
        self._started = False
        self._portaudio = PortAudioThread()
        #: Streams whose start hung: kept referenced (their callbacks may still run) and never closed.
        self._hung_streams: list[Capture | Playback] = []

    @property
    def factory(self) -> StreamFactory:
        """The stream factory in use (after :meth:`start`)."""
        assert self._factory is not None
        return self._factory

    async def portaudio(self, call: Callable[..., T], *args: object, timeout_s: float | None = None) -> T:
        """Run a blocking PortAudio call on the PortAudio thread.

        Raises:
            CallTimeout: ``timeout_s`` passed first (the call is abandoned, see :mod:`kiosk.audio.worker`).
        """
        return await self._portaudio.run(call, *args, timeout_s=timeout_s)

    async def rescan(self) -> bool:
        """Refresh PortAudio's device list (every stream must be closed); False when it cannot be done now.

        Never after a PortAudio call hung: ``Pa_Terminate`` would close the stuck stream and abort the process.
        """
        if hung_calls():
            return False
        try:
            await self._portaudio.run(self.factory.rescan, timeout_s=RESCAN_TIMEOUT_S, what="rescan audio devices")
        except CallTimeout:
            log.error("rescanning the audio devices hung for %.0f s; no further rescans", RESCAN_TIMEOUT_S)
            return False
        return True

    def processing(self) -> bool:
        """Whether a session or a frame subscriber uses the microphone path (the supervisor's rescans wait)."""
        return self._hooks.processing()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, *, missing_ok: bool = False) -> None:
        """Open both devices and start supervising them.

        Raises:
            AudioDeviceError: a device cannot be opened, unless ``missing_ok``: then the failure is reported to
                health subscribers and the device is opened by the supervisor once it appears.
        """
        self._loop = self._loop or asyncio.get_running_loop()
        if self._factory is None:
            from kiosk.audio.streams import SoundDeviceFactory

            self._factory = await self.portaudio(SoundDeviceFactory)
        for direction in (self.input, self.output):
            try:
                await self.open_direction(direction)
            except AudioDeviceError as exc:
                if not missing_ok:
                    await self._close_streams()
                    raise
                self._missing_at_start(direction, exc)
        self._supervisor = Supervisor(devices=self, clock=self._clock, rng=self._rng, short_of_cpu=self._short_of_cpu)
        self._supervisor.start(self._loop)
        self._started = True

    async def close(self) -> None:
        """Stop supervising and close both streams (within ``CLOSE_BUDGET_S``; a hanging device is left behind)."""
        if self._supervisor is not None:
            await self._supervisor.stop()
        try:
            # Closed, and every earlier PortAudio call (a reopen attempt still under way) has returned.
            await asyncio.wait_for(self._close_streams_and_drain(), CLOSE_BUDGET_S)
        except TimeoutError:
            log.warning(
                "PortAudio did not close the streams within %.0f s (a device hangs); leaving them", CLOSE_BUDGET_S
            )
            STUCK.set()
        self._portaudio.stop()
        self._started = False

    async def _close_streams_and_drain(self) -> None:
        await self._close_streams()
        await self.portaudio(_nothing, timeout_s=CLOSE_TIMEOUT_S)

    async def _close_streams(self) -> None:
        for direction in (self.input, self.output):
            await self.close_direction(direction, None)

    def _missing_at_start(self, direction: Direction, exc: AudioDeviceError) -> None:
        message = str(exc).splitlines()[0]
        log.error("audio %s unavailable at start (%s); running without it and trying again", direction.name, message)
        direction.last_error = message
        direction.failures += 1
        direction.schedule_retry(self._clock(), max_s=self.config.reopen_backoff_max_s, rng=self._rng, poll_s=POLL_S)
        self.report(
            AudioHealthEvent(direction=direction.name, ok=False, message=message, reason=FailureReason.AUDIO_DEVICE)
        )

    # -- one direction (called by the supervisor too) ------------------------------------------------------

    async def open_direction(self, direction: Direction) -> None:
        """Resolve and open one direction's device.

        PortAudio's part runs on the PortAudio thread, each call bounded (``OPEN_TIMEOUT_S``, ``START_TIMEOUT_S``);
        the loop-side parts of the stream start on the loop.

        Raises:
            AudioDeviceError: no such device, PortAudio refused it, or it did not answer within the bound
                (:class:`DeviceHung`; the stuck stream is kept, never closed).
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()  # a hardware test opens one direction without start()
        ref = self.config.input_device if direction.name == "input" else self.config.output_device
        named = f"{direction.name} device {ref if ref is not None else 'default'!r}"
        if direction.hung >= MAX_HUNG_PER_DIRECTION:
            raise DeviceHung(
                f"the audio {named} hung PortAudio {direction.hung} times; not tried again: restart the kiosk "
                "(systemctl restart kiosk) once the device works"
            )
        try:
            stream = await self._portaudio.run(
                self._open_stream, direction, timeout_s=OPEN_TIMEOUT_S, what=f"open {named}", on_late=_close_late
            )
        except CallTimeout:
            raise self._hung(direction, f"opening the audio {named}", OPEN_TIMEOUT_S) from None
        stream.prime()
        named = f"{direction.name} device {stream.params.device.name!r}"
        try:
            await self._portaudio.run(
                stream.start_stream, timeout_s=START_TIMEOUT_S, what=f"start {named}", on_late=lambda _: stream.close()
            )
        except CallTimeout:
            stream.stop()
            # Never closed: closing a stream whose start is stuck aborts the process (see kiosk.audio.worker).
            self._hung_streams.append(stream)
            raise self._hung(direction, f"starting the audio {named}", START_TIMEOUT_S) from None
        except Exception as exc:
            stream.stop()
            await self._close_stream(stream, direction.name)
            raise AudioDeviceError(f"cannot start {named}: {exc}") from exc
        params = stream.params
        direction.stream = stream
        direction.failed = None
        direction.opened_t = self._clock()
        direction.device = params.device.name
        direction.samplerate = params.samplerate
        direction.channels = params.channels
        direction.latency_s = stream.latency
        log.info(
            "audio %s: %r at %d Hz, %d channel(s), latency %.1f ms",
            direction.name,
            params.device.name,
            params.samplerate,
            params.channels,
            stream.latency * 1000,
        )
        self._hooks.on_opened()

    def _hung(self, direction: Direction, doing: str, bound_s: float) -> DeviceHung:
        direction.hung += 1
        message = (
            f"{doing} did not return within {bound_s:g} s (PortAudio hung on it; is the device plugged in, and its "
            "PulseAudio sink or source present? `kiosk devices`, `pactl list short sinks`)"
        )
        log.error("%s; the call is abandoned (%d on this direction)", message, direction.hung)
        return DeviceHung(message)

    def _open_stream(self, direction: Direction) -> Capture | Playback:
        """PortAudio thread: find the device and open (not start) its stream."""
        assert self._factory is not None and self._loop is not None
        factory, loop, hooks = self._factory, self._loop, self._hooks
        ref = self.config.input_device if direction.name == "input" else self.config.output_device
        defaults = factory.default_devices()
        default = defaults[0] if direction.name == "input" else defaults[1]
        device = resolve(ref, direction.name, factory.devices(), default)
        params = stream_params(device, direction.name, input_channel=self.config.input_channel)
        params = at_rate(params, direction.name, SAMPLE_RATE, factory.supports)

        def finished() -> None:
            if direction.stream is stream:
                direction.failed = "the stream stopped"

        stream: Capture | Playback
        try:
            if direction.name == "input":
                stream = Capture(
                    factory=factory,
                    loop=loop,
                    params=params,
                    channel=self.config.input_channel,
                    sink=hooks.sink,
                    idle=lambda: not hooks.cancelling(),
                    on_finished=finished,
                    clock=self._clock,
                    max_pending_s=self._max_pending_s,
                )
            else:
                stream = Playback(
                    factory=factory,
                    loop=loop,
                    params=params,
                    mixer=hooks.mixer,
                    reverse=hooks.reverse,
                    needs_reverse=hooks.cancelling,
                    feeds_reverse=hooks.feeds_reverse,
                    on_audible=hooks.on_audible,
                    on_finished=finished,
                    clock=self._clock,
                )
        except AudioDeviceError as exc:
            raise AudioDeviceError(
                f"cannot open the audio {direction.name} device {device.name!r}: {str(exc).removeprefix('cannot open ')}"
                f" (is it plugged in, and its PulseAudio {'source' if direction.name == 'input' else 'sink'} there? "
                "`kiosk devices` lists what PortAudio sees)"
            ) from exc
        return stream

    async def close_direction(self, direction: Direction, error: str | None) -> None:
        """Close one direction's stream (on the PortAudio thread), keeping its counters."""
        stream = direction.stream
        if stream is None:
            return
        direction.stream = None
        stream.stop()
        if isinstance(stream, Capture):
            direction.add_counters(
                {"overflows": stream.overflows, "dropped": stream.dropped_blocks, "blocks": stream.blocks}
            )
        elif isinstance(stream, Playback):
            direction.add_counters(
                {
                    "underruns": stream.underruns,
                    "starved": stream.starved,
                    "blocks": stream.blocks,
                    "reverse_dropped": stream.reverse_dropped,
                }
            )
        await self._close_stream(stream, direction.name)
        if error is not None:
            direction.last_error = error

    async def _close_stream(self, stream: Capture | Playback | Stream, name: str) -> None:
        """Close a stream on the PortAudio thread within ``CLOSE_TIMEOUT_S`` (a stuck close is abandoned)."""
        started = time.monotonic()
        try:
            await self._portaudio.run(stream.close, timeout_s=CLOSE_TIMEOUT_S, what=f"close the {name} stream")
            log.debug("closed the %s stream in %.0f ms", name, (time.monotonic() - started) * 1000)
        except CallTimeout:
            log.error("closing the %s stream did not return within %.0f s; abandoned", name, CLOSE_TIMEOUT_S)
        except (OSError, RuntimeError) as exc:
            # A vanished device may refuse to close cleanly; it is gone either way.
            log.warning("closing the %s stream failed: %s", name, exc)

    # -- health --------------------------------------------------------------------------------------------

    def report(self, event: AudioHealthEvent) -> None:
        """Tell health subscribers about a device failure or recovery."""
        emit(self._health_subscribers, event)

    def subscribe_health(self, callback: Callable[[AudioHealthEvent], None]) -> Callable[[], None]:
        """Call ``callback`` when a device fails or comes back, and now for a device that is down; returns the
        unsubscribe function."""
        unsubscribe = subscribe(self._health_subscribers, callback)
        for direction in (self.input, self.output):
            if self._started and direction.stream is None and direction.last_error is not None:
                message = f"audio {direction.name} unavailable: {direction.last_error}"
                callback(
                    AudioHealthEvent(
                        direction=direction.name, ok=False, message=message, reason=FailureReason.AUDIO_DEVICE
                    )
                )
        return unsubscribe

    def device_health(self, direction: Direction) -> DeviceHealth:
        """One direction's device, state and stream counters (those of closed streams included)."""
        stream = direction.stream
        blocks = direction.counters.get("blocks", 0) + (stream.blocks if isinstance(stream, Capture | Playback) else 0)
        return DeviceHealth(
            direction=direction.name,
            device=direction.device,
            ok=stream is not None,
            samplerate=direction.samplerate,
            channels=direction.channels,
            latency_s=direction.latency_s,
            blocks=blocks,
            failures=direction.failures,
            reopens=direction.reopens,
            last_error=direction.last_error,
        )
