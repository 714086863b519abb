"""A fake :class:`~kiosk.audio.streams.StreamFactory` for unit tests: the test drives the callbacks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kiosk.audio.streams import Block, DeviceInfo, StreamCallback
from kiosk.errors import AudioDeviceError

#: A small default device list: a stereo 44.1 kHz USB mic and a 48 kHz speaker.
DEFAULT_DEVICES = (
    DeviceInfo(0, "Fake USB Mic", "ALSA", 2, 0, 44_100.0),
    DeviceInfo(1, "Fake Speaker", "ALSA", 0, 2, 48_000.0),
)


class FakeStream:
    """A stream whose callback runs only when the test calls :meth:`feed` or :meth:`pull`."""

    def __init__(
        self,
        *,
        kind: str,
        device: int,
        samplerate: int,
        channels: int,
        blocksize: int,
        callback: StreamCallback,
        on_finished: Callable[[], None],
        latency: float,
    ) -> None:
        self.kind = kind
        self.device = device
        self.samplerate = samplerate
        self.channels = channels
        self.blocksize = blocksize
        self.callback = callback
        self.on_finished = on_finished
        self._latency = latency
        self.started = False
        self.closed = False
        #: What the fake's callback timing shows (s); tests set it.
        self.measured_latency: float | None = None

    @property
    def latency(self) -> float:
        """The latency the fake reports."""
        return self._latency

    def start(self) -> None:
        """Mark the stream started."""
        self.started = True

    def close(self) -> None:
        """Mark the stream closed."""
        self.closed = True

    def feed(self, samples: Block, *, overflow: bool = False) -> None:
        """Input: run the callback over ``samples`` (frames x channels, or mono) one block at a time."""
        data = samples.reshape(-1, 1) if samples.ndim == 1 else samples
        if data.shape[1] != self.channels:
            data = np.repeat(data[:, :1], self.channels, axis=1)
        for start in range(0, len(data) - self.blocksize + 1, self.blocksize):
            self.callback(np.ascontiguousarray(data[start : start + self.blocksize]), overflow)

    def pull(self, blocks: int = 1) -> Block:
        """Output: run the callback ``blocks`` times and return what it played (first channel)."""
        played = []
        for _ in range(blocks):
            out = np.full((self.blocksize, self.channels), 12345, dtype=np.int16)
            self.callback(out, False)
            played.append(out[:, 0].copy())
        return np.concatenate(played)

    def fail(self) -> None:
        """Simulate PortAudio stopping the stream (a device error)."""
        self.on_finished()


class FakeStreamFactory:
    """Hands out :class:`FakeStream` objects and records them; can be told to refuse opening."""

    def __init__(
        self,
        *,
        devices: tuple[DeviceInfo, ...] = DEFAULT_DEVICES,
        defaults: tuple[int | None, int | None] = (0, 1),
        latency: float = 0.01,
    ) -> None:
        self.device_list = list(devices)
        self.defaults = defaults
        self.latency = latency
        self.streams: list[FakeStream] = []
        self.refuse: set[str] = set()
        #: Rates every device opens at besides its default one (tests add 48000 to skip resampling).
        self.rates: set[int] = set()
        self.rescans = 0

    def devices(self) -> list[DeviceInfo]:
        """The configured device list."""
        return list(self.device_list)

    def default_devices(self) -> tuple[int | None, int | None]:
        """The configured defaults."""
        return self.defaults

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
    ) -> FakeStream:
        """Record and return a new fake stream, or raise if ``kind`` is in :attr:`refuse`."""
        if kind in self.refuse:
            raise AudioDeviceError(f"fake {kind} device {device} refused to open")
        stream = FakeStream(
            kind=kind,
            device=device,
            samplerate=samplerate,
            channels=channels,
            blocksize=blocksize,
            callback=callback,
            on_finished=on_finished,
            latency=self.latency,
        )
        self.streams.append(stream)
        return stream

    def supports(self, *, kind: str, device: int, samplerate: int, channels: int) -> bool:
        """True for a device's default rate and for :attr:`rates`."""
        info = next((d for d in self.device_list if d.index == device), None)
        return info is not None and (samplerate == int(info.default_samplerate) or samplerate in self.rates)

    def rescan(self) -> None:
        """Count the rescan."""
        self.rescans += 1

    def latest(self, kind: str) -> FakeStream:
        """The most recently opened stream of ``kind``."""
        return next(s for s in reversed(self.streams) if s.kind == kind)
