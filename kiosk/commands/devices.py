"""``kiosk devices``: list audio inputs and outputs with their native rates and channel counts."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from kiosk.audio.streams import DeviceInfo, StreamFactory
from kiosk.cliformat import HelpFormatter, describe


def format_devices(devices: list[DeviceInfo], defaults: tuple[int | None, int | None]) -> str:
    """The listing ``kiosk devices`` prints: inputs, then outputs, the defaults marked with ``*``."""
    lines: list[str] = []
    for title, kind, default in (("inputs", "input", defaults[0]), ("outputs", "output", defaults[1])):
        lines.append(f"{title}:")
        rows = [d for d in devices if (d.max_input_channels if kind == "input" else d.max_output_channels) > 0]
        for d in rows:
            channels = d.max_input_channels if kind == "input" else d.max_output_channels
            mark = "*" if d.index == default else " "
            lines.append(
                f" {mark}[{d.index:>2}] {d.name}  ({d.host_api}, {d.default_samplerate:.0f} Hz, {channels} ch)"
            )
        if not rows:
            lines.append("   (none)")
    lines.append("* = default. Use a name substring or the index as audio.input_device / audio.output_device.")
    return "\n".join(lines)


def main(argv: list[str], *, factory: StreamFactory | None = None) -> int:
    """Print the audio devices PortAudio sees."""
    parser = argparse.ArgumentParser(prog="kiosk devices", description=describe(__doc__), formatter_class=HelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the devices as JSON")
    args = parser.parse_args(argv)
    if factory is None:
        try:
            from kiosk.audio.streams import SoundDeviceFactory

            factory = SoundDeviceFactory()
        except OSError as exc:
            print(f"kiosk devices: PortAudio is not available: {exc}", file=sys.stderr)
            return 1
    devices, defaults = factory.devices(), factory.default_devices()
    if args.json:
        listing = [dataclasses.asdict(d) for d in devices]
        print(json.dumps({"devices": listing, "default_input": defaults[0], "default_output": defaults[1]}, indent=2))
    else:
        print(format_devices(devices, defaults))
    return 0
