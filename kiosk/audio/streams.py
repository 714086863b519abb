"""The hardware border: small protocols for audio streams, and their PortAudio implementation.

Callbacks given to a factory run on PortAudio's thread. They receive int16 arrays shaped ``(frames, channels)``
that are only valid during the call, and a flag for an input overflow or output underflow reported by PortAudio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kiosk.audio.alsalog import native_stderr_to_log, route_alsa_errors_to_log, unload_unused_alsa_plugins
from kiosk.errors import AudioDeviceError

log = logging.getLogger(__name__)

Block = npt.NDArray[np.int16]
#: ``callback(data, overflow_or_underflow)``; for output, fill ``data`` in place.
StreamCallback = Callable[[Block, bool], None]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One PortAudio device as ``kiosk devices`` shows it."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float


class AudioStream(Protocol):
    """An open PortAudio stream."""

    @property
    def latency(self) -> float:
        """The stream's reported latency in seconds."""
        ...

    @property
    def measured_latency(self) -> float | None:
        """The latency the callback's timing shows (s), or None before a callback or where the host API does not
        tell: output DAC time minus now, or now minus input ADC time (PortAudio's ``time_info``)."""
        ...

    def start(self) -> None:
        """Start calling the callback."""
        ...

    def close(self) -> None:
        """Stop and release the stream; safe to call twice."""
        ...


class StreamFactory(Protocol):
    """Opens streams and lists devices; the engine's only way to reach audio hardware."""

    def devices(self) -> list[DeviceInfo]:
        """Every device the audio library knows."""
        ...

    def default_devices(self) -> tuple[int | None, int | None]:
        """The default (input, output) device indices."""
        ...

    def open(
        self,
        *,
        kind: str,
        device: int,
        samplerate: int,
        channels: int,
        blocksize: int,
        callback: StreamCallback,
        on_finished: Callable[[], None],
    ) -> AudioStream:
        """Open (not start) an ``"input"`` or ``"output"`` int16 stream; raise ``AudioDeviceError`` on failure."""
        ...

    def supports(self, *, kind: str, device: int, samplerate: int, channels: int) -> bool:
        """Whether ``device`` opens as an int16 ``kind`` stream at ``samplerate`` Hz with ``channels`` (blocking)."""
        ...

    def rescan(self) -> None:
        """Refresh the device list (only called while no stream is open)."""
        ...


def post(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> None:
    """Hand ``callback(*args)`` to the loop from a PortAudio thread; a closed loop means shutdown, so drop it."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return


#: Every sounddevice stream opened and not yet closed. PortAudio's thread calls the stream's cffi callback until the
#: stream is closed; had the stream been garbage-collected first, that call would run on freed memory and abort the
#: process. Held here, a stream nobody closes is a leak (see :func:`open_stream_count`), never a crash.
_OPEN_STREAMS: set[Any] = set()


def open_stream_count() -> int:
    """How many PortAudio streams this process opened and has not closed."""
    return len(_OPEN_STREAMS)


#: A callback timing of zero or further off than this (s) is not believed (a host API that keeps no times gives
#: zeros; a file device runs ahead of any clock).
MAX_TIMED_LATENCY_S = 1.0


class _Timing:
    """The latest latency seen in a callback's ``time_info``; written by the callback thread only."""

    def __init__(self, kind: str) -> None:
        self.output = kind == "output"
        self.latency: float | None = None

    def update(self, time: Any) -> None:
        now = float(time.currentTime)
        latency = float(time.outputBufferDacTime) - now if self.output else now - float(time.inputBufferAdcTime)
        if now > 0 and 0 < latency <= MAX_TIMED_LATENCY_S:
            self.latency = latency


class _SdStream:
    """A sounddevice stream behind the :class:`AudioStream` protocol."""

    def __init__(self, stream: Any, timing: _Timing) -> None:
        self._stream = stream
        self._timing = timing
        self._closed = False

    @property
    def latency(self) -> float:
        return float(self._stream.latency)

    @property
    def measured_latency(self) -> float | None:
        return self._timing.latency

    def start(self) -> None:
        with native_stderr_to_log():
            self._stream.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.abort()
        finally:
            self._stream.close()
            _OPEN_STREAMS.discard(self._stream)


class SoundDeviceFactory:
    """The real :class:`StreamFactory`: PortAudio through sounddevice (imported on first use)."""

    def __init__(self) -> None:
        # Before PortAudio initialises: probing devices already makes ALSA print.
        route_alsa_errors_to_log()
        import sounddevice

        self._sd: Any = sounddevice
        # PortAudio's scan (at import) loaded every ALSA plugin the configuration names; none is open now.
        unload_unused_alsa_plugins()

    def devices(self) -> list[DeviceInfo]:
        """Every PortAudio device with its host API name."""
        apis = [str(api["name"]) for api in self._sd.query_hostapis()]
        return [
            DeviceInfo(
                index=i,
                name=str(d["name"]),
                host_api=apis[int(d["hostapi"])] if int(d["hostapi"]) < len(apis) else "?",
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=float(d["default_samplerate"]),
            )
            for i, d in enumerate(self._sd.query_devices())
        ]

    def default_devices(self) -> tuple[int | None, int | None]:
        """PortAudio's default input and output indices (None when there is none)."""
        dev_in, dev_out = (int(x) for x in self._sd.default.device)
        return (dev_in if dev_in >= 0 else None, dev_out if dev_out >= 0 else None)

    def open(
        self,
        *,
        kind: str,
        device: int,
        samplerate: int,
        channels: int,
        blocksize: int,
        callback: StreamCallback,
        on_finished: Callable[[], None],
    ) -> AudioStream:
        """Open a callback stream in int16 with the given native parameters."""
        sd = self._sd

        flag = "input_overflow" if kind == "input" else "output_underflow"
        timing = _Timing(kind)

        def raw(data: Block, frames: int, time: Any, status: Any) -> None:
            timing.update(time)
            callback(data, bool(getattr(status, flag)))

        cls = sd.InputStream if kind == "input" else sd.OutputStream
        try:
            # PortAudio prints "Expression ... failed" lines on a failed open: they go to the debug log.
            with native_stderr_to_log():
                stream = cls(
                    device=device,
                    samplerate=samplerate,
                    channels=channels,
                    dtype="int16",
                    blocksize=blocksize,
                    latency="low",
                    callback=raw,
                    finished_callback=on_finished,
                )
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioDeviceError(f"cannot open {kind} device {device}: {exc}") from exc
        _OPEN_STREAMS.add(stream)
        return _SdStream(stream, timing)

    def supports(self, *, kind: str, device: int, samplerate: int, channels: int) -> bool:
        """PortAudio's own answer (``check_input_settings`` / ``check_output_settings``): False when it refuses."""
        sd = self._sd
        check = sd.check_input_settings if kind == "input" else sd.check_output_settings
        try:
            with native_stderr_to_log():
                check(device=device, channels=channels, dtype="int16", samplerate=samplerate)
        except (sd.PortAudioError, ValueError) as exc:
            log.debug("%s device %d refuses %d Hz: %s", kind, device, samplerate, exc)
            return False
        return True

    def rescan(self) -> None:
        """Re-initialise PortAudio so devices plugged in since start appear."""
        self._sd._terminate()
        self._sd._initialize()
        unload_unused_alsa_plugins()
        log.info("rescanned audio devices: %d found", len(self._sd.query_devices()))
