"""``kiosk test mic|speaker|leds|button``: try the kiosk's hardware from a terminal, with the daemon stopped.

Each check reads the same config as the daemon (``--config``), refuses to run while the daemon answers on its control
socket (it holds the devices), and says so plainly when another process holds a device. ``--json`` prints one JSON
object per line instead of text. Exit status: 0 when the check ran (and, for ``mic``, heard speech), 1 when it
found a problem, 75 when the daemon or another process holds the device, 78 for a config error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiosk.cliformat import HelpFormatter, describe
from kiosk.commands.hwtest_common import EXIT_BUSY, EXIT_PROBLEM, CheckFailed, Printer
from kiosk.config import KioskConfig
from kiosk.configfile import DEFAULT_PATH, EX_CONFIG, load_config, resolve_path
from kiosk.errors import AudioDeviceError, ConfigError
from kiosk.hwtest.holder import busy_message, daemon_message, daemon_state


def build_parser() -> argparse.ArgumentParser:
    """The ``kiosk test`` parser with one subcommand per device."""
    parser = argparse.ArgumentParser(prog="kiosk test", description=describe(__doc__), formatter_class=HelpFormatter)
    common = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
    common.add_argument("--config", help="config file (default: $KIOSK_CONFIG, else /etc/kiosk/kiosk.toml)")
    common.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    sub = parser.add_subparsers(dest="check", required=True, metavar="{mic,speaker,leds,button}")
    mic = sub.add_parser(
        "mic",
        parents=[common],
        formatter_class=HelpFormatter,
        help="live level meter of the microphone",
        description="A live level meter of the microphone (raw, before echo cancellation and gain control): level "
        "and peak in dBFS, clipping, the noise floor and voice activity; a verdict at the end.",
    )
    mic.add_argument(
        "--device",
        help="input device name substring or index (default: audio.input_device); with --scan: try only the inputs "
        "whose name contains it",
    )
    mic.add_argument("--seconds", type=float, default=10.0, help="how long to listen (each input, with --scan: 3)")
    mic.add_argument("--scan", action="store_true", help="try every input in turn and suggest the one that hears you")
    speaker = sub.add_parser(
        "speaker",
        parents=[common],
        formatter_class=HelpFormatter,
        help="a tone, the chimes and a spoken sentence",
        description="Play a tone, the chimes and a spoken sentence (espeak-ng) on the speaker at the configured "
        "audio.output_volume.",
    )
    speaker.add_argument("--device", help="output device name substring or index (default: audio.output_device)")
    speaker.add_argument("--volume", type=float, help="0.0 to 1.0 (default: audio.output_volume)")
    speaker.add_argument("--tone-hz", type=float, default=440.0, help="tone frequency in Hz")
    speaker.add_argument("--tone-seconds", type=float, default=1.0, help="tone length in seconds")
    leds = sub.add_parser(
        "leds",
        parents=[common],
        formatter_class=HelpFormatter,
        help="every state and failure code in turn",
        description="Show every state and every failure code on the configured LEDs, each named on the terminal.",
    )
    leds.add_argument("--each", type=float, default=3.0, help="seconds per state (a failure code: one whole cycle)")
    leds.add_argument("--only", help="show only the steps whose name contains this text (e.g. error, live)")
    button = sub.add_parser(
        "button",
        parents=[common],
        formatter_class=HelpFormatter,
        help="watch the button: presses, holds, bounces",
        description="Watch the button's pin and print every press, release, hold and bounce with its timing.",
    )
    button.add_argument(
        "--which",
        choices=["button", "volume-up", "volume-down", "mute"],
        default="button",
        help="which button: trigger.button_pin, .volume_up_pin, .volume_down_pin or .mute_pin",
    )
    button.add_argument("--pin", type=int, help="BCM pin to watch (default: the --which button's pin)")
    button.add_argument("--seconds", type=float, default=30.0, help="how long to watch")
    button.add_argument("--presses", type=int, default=0, help="stop after this many presses (0: watch --seconds)")
    return parser


def main(argv: list[str], *, pin_factory: Any = None, stream_factory: Any = None) -> int:
    """Run ``kiosk test DEVICE``; the factories are for tests (gpiozero MockFactory, a StreamFactory)."""
    args = build_parser().parse_args(argv)
    printer = Printer(as_json=args.json)
    try:
        path, config = _config(args.config, required=args.check in {"leds", "button"})
        what = {"mic": "the microphone", "speaker": "the speaker", "leds": "the LED pins", "button": "the button pin"}
        state = daemon_state(config.control.socket)
        if state is not None:
            raise CheckFailed(EXIT_BUSY, daemon_message(config.control.socket, state, what[args.check]))
        if args.check in {"mic", "speaker"}:
            from kiosk.commands.hwtest_audio import run_mic, run_speaker

            factory = stream_factory or _sound_factory()
            runner = run_mic if args.check == "mic" else run_speaker
            return _guard(what[args.check], lambda: runner(args, config, factory, printer))
        from kiosk.commands.hwtest_gpio import run_button, run_leds

        gpio = run_leds if args.check == "leds" else run_button
        return _guard(what[args.check], lambda: gpio(args, path, config, pin_factory, printer))
    except CheckFailed as exc:
        print(f"kiosk test {args.check}: {exc}", file=sys.stderr)
        return exc.code


def _guard(what: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except CheckFailed:
        raise
    except (AudioDeviceError, OSError, RuntimeError, ValueError) as exc:
        raise CheckFailed(EXIT_BUSY, busy_message(exc, what) or str(exc)) from None
    except Exception as exc:
        # gpiozero's errors (no pin factory, pin in use) share no base with the builtins above.
        message = busy_message(exc, what)
        if message is None and type(exc).__module__.startswith("gpiozero"):
            message = f"{what} cannot be opened: {type(exc).__name__}: {exc}"
        if message is None:
            raise
        raise CheckFailed(EXIT_BUSY, message) from None


def _config(cli_path: str | None, *, required: bool) -> tuple[Path, KioskConfig]:
    path = resolve_path(cli_path)
    try:
        return path, load_config(path)
    except ConfigError as exc:
        if not path.exists() and path == DEFAULT_PATH and not required:
            # Before the config is written the audio checks still work, with the default devices.
            return path, KioskConfig.model_validate({"broker": {"dialect": "livekit", "url": "http://127.0.0.1"}})
        raise CheckFailed(EX_CONFIG, f"config error: {exc}") from None


def _sound_factory() -> Any:
    try:
        from kiosk.audio.streams import SoundDeviceFactory

        return SoundDeviceFactory()
    except OSError as exc:
        raise CheckFailed(
            EXIT_PROBLEM, f"PortAudio is not available: {exc} (sudo apt-get install libportaudio2)"
        ) from None
