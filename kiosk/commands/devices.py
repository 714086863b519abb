"""``kiosk devices``: list audio inputs and outputs with their native rates and channel counts.

It also says whether the daemon would run its own echo canceller with these devices (``audio.echo_cancellation``,
judged from ``--config``, else ``$KIOSK_CONFIG``, else ``/etc/kiosk/kiosk.toml`` if it exists, else the defaults) and why: off for a speakerphone that cancels its own echo.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from kiosk.audio import aec
from kiosk.audio.devices import resolve
from kiosk.audio.streams import DeviceInfo, StreamFactory
from kiosk.cliformat import HelpFormatter, describe
from kiosk.config import AudioConfig
from kiosk.errors import AudioDeviceError, ConfigError


def format_devices(devices: list[DeviceInfo], defaults: tuple[int | None, int | None]) -> str:
    """The listing ``kiosk devices`` prints: inputs, then outputs, the defaults marked with ``*``."""
    lines: list[str] = []
    for title, kind, default in (("inputs", "input", defaults[0]), ("outputs", "output", defaults[1])):
        lines.append(f"{title}:")
        rows = [d for d in devices if (d.max_input_channels if kind == "input" else d.max_output_channels) > 0]
        for d in rows:
            channels = d.max_input_channels if kind == "input" else d.max_output_channels
            mark = "*" if d.index == default else " "
            phone = "  [speakerphone: cancels its own echo]" if _duplex_speakerphone(d) else ""
            lines.append(
                f" {mark}[{d.index:>2}] {d.name}  ({d.host_api}, {d.default_samplerate:.0f} Hz, {channels} ch){phone}"
            )
        if not rows:
            lines.append("   (none)")
    lines.append("* = default. Use a name substring or the index as audio.input_device / audio.output_device.")
    return "\n".join(lines)


def _duplex_speakerphone(device: DeviceInfo) -> bool:
    return (
        device.max_input_channels > 0 and device.max_output_channels > 0 and bool(aec.speakerphone_match(device.name))
    )


def echo_choice(
    audio: AudioConfig, devices: list[DeviceInfo], defaults: tuple[int | None, int | None]
) -> tuple[aec.EchoChoice, str | None, str | None]:
    """What ``audio.echo_cancellation`` comes to with ``audio``'s devices: the choice and the two device names.

    A device that cannot be found gives a choice whose reason says so (software AEC stays on).
    """
    try:
        mic = resolve(audio.input_device, "input", devices, defaults[0]).name
        speaker = resolve(audio.output_device, "output", devices, defaults[1]).name
    except AudioDeviceError as exc:
        first = str(exc).splitlines()[0]
        return aec.EchoChoice(audio.echo_cancellation is not False, f"cannot decide: {first}"), None, None
    return aec.choose(audio.echo_cancellation, mic, speaker), mic, speaker


def main(argv: list[str], *, factory: StreamFactory | None = None) -> int:
    """Print the audio devices PortAudio sees."""
    parser = argparse.ArgumentParser(prog="kiosk devices", description=describe(__doc__), formatter_class=HelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the devices as JSON")
    parser.add_argument(
        "--config",
        help="the kiosk.toml whose [audio] devices and echo_cancellation to judge (default: $KIOSK_CONFIG, else "
        "/etc/kiosk/kiosk.toml if it exists, else the defaults)",
    )
    args = parser.parse_args(argv)
    audio = AudioConfig()
    from kiosk.configfile import EX_CONFIG, load_config, resolve_path

    path = resolve_path(args.config)
    explicit = bool(args.config or os.environ.get("KIOSK_CONFIG"))
    if explicit or path.exists():
        try:
            audio = load_config(path).audio
        except ConfigError as exc:
            if args.config:
                print(f"kiosk: config error: {exc}", file=sys.stderr)
                return EX_CONFIG
            # The listing is what an installer needs to mend the file: judge the defaults and say so.
            print(f"kiosk devices: judging the default [audio] settings: config error: {exc}", file=sys.stderr)
    if factory is None:
        try:
            from kiosk.audio.streams import SoundDeviceFactory

            factory = SoundDeviceFactory()
        except OSError as exc:
            print(f"kiosk devices: PortAudio is not available: {exc}", file=sys.stderr)
            return 1
    devices, defaults = factory.devices(), factory.default_devices()
    choice, mic, speaker = echo_choice(audio, devices, defaults)
    if args.json:
        listing = [dataclasses.asdict(d) for d in devices]
        echo = {"enabled": choice.enabled, "why": choice.reason, "input": mic, "output": speaker}
        print(
            json.dumps(
                {
                    "devices": listing,
                    "default_input": defaults[0],
                    "default_output": defaults[1],
                    "echo_cancellation": echo,
                },
                indent=2,
            )
        )
    else:
        print(format_devices(devices, defaults))
        setting = json.dumps(audio.echo_cancellation)
        print(f"software echo cancellation (audio.echo_cancellation = {setting}): {choice.describe()}")
    return 0
