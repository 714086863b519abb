"""Choosing devices by name substring or index, and the error that lists what exists."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from kiosk.audio.streams import DeviceInfo
from kiosk.errors import AudioDeviceError

#: Devices advertising more channels than this are virtual (ALSA plug, pulse): open only what is needed.
MAX_NATIVE_CHANNELS = 16


@dataclass(frozen=True, slots=True)
class StreamParams:
    """How to open one direction: device index, native rate and channel count."""

    device: DeviceInfo
    samplerate: int
    channels: int


def _channels(kind: str, device: DeviceInfo) -> int:
    return device.max_input_channels if kind == "input" else device.max_output_channels


def describe(devices: list[DeviceInfo], kind: str) -> str:
    """One line per device of ``kind`` (``"input"`` or ``"output"``): index, name, rate, channels."""
    rows = [
        f"  [{d.index}] {d.name} ({d.default_samplerate:.0f} Hz, {_channels(kind, d)} ch)"
        for d in devices
        if _channels(kind, d) > 0
    ]
    return "\n".join(rows) if rows else "  (none)"


def resolve(ref: str | int | None, kind: str, devices: list[DeviceInfo], default: int | None) -> DeviceInfo:
    """Find the ``kind`` device for a config reference; raise ``AudioDeviceError`` listing the choices."""
    usable = [d for d in devices if _channels(kind, d) > 0]
    found: DeviceInfo | None = None
    if ref is None:
        found = next((d for d in usable if d.index == default), usable[0] if usable else None)
    elif isinstance(ref, int) or ref.strip().isdigit():
        found = next((d for d in usable if d.index == int(ref)), None)
    else:
        exact = [d for d in usable if d.name == ref]
        partial = [d for d in usable if ref.lower() in d.name.lower()]
        found = (exact or partial)[0] if (exact or partial) else None
    if found is None:
        wanted = "the default" if ref is None else repr(ref)
        raise AudioDeviceError(
            f"no audio {kind} device matches {wanted}; available {kind}s:\n{describe(devices, kind)}"
        )
    return found


def stream_params(device: DeviceInfo, kind: str, *, input_channel: int = 0) -> StreamParams:
    """Native rate and channel count to open ``device`` with, checking the wanted input channel exists."""
    available = _channels(kind, device)
    if kind == "input":
        if input_channel >= available:
            raise AudioDeviceError(
                f"audio.input_channel is {input_channel} but {device.name!r} has {available} input channel(s)"
            )
        channels = available if available <= MAX_NATIVE_CHANNELS else max(input_channel + 1, 1)
    else:
        # Virtual devices convert for us; real ones get mono or stereo, whichever they take.
        channels = 1 if available > MAX_NATIVE_CHANNELS else min(available, 2)
    return StreamParams(device=device, samplerate=int(device.default_samplerate), channels=channels)


def at_rate(params: StreamParams, kind: str, rate: int, supports: Callable[..., bool]) -> StreamParams:
    """``params`` at ``rate`` (Hz) when the device accepts it (``supports``: a factory's ``supports``), else as is.

    Opening at the pipeline's rate saves resampling every block both ways; PortAudio decides what a device takes.
    """
    if params.samplerate == rate:
        return params
    if supports(kind=kind, device=params.device.index, samplerate=rate, channels=params.channels):
        return dataclasses.replace(params, samplerate=rate)
    return params
