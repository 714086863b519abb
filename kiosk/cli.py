"""The ``kiosk`` command line: a thin dispatcher to one module per subcommand.

Each subcommand lives in its own module exposing ``main(argv: list[str]) -> int``; modules are imported only when
their command runs, so ``kiosk status`` does not pay for importing LiveKit or PortAudio.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from kiosk import __version__
from kiosk.cliformat import quiet_broken_pipe

#: name -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("kiosk.commands.run", "run the daemon (what systemd starts)"),
    "demo": ("kiosk.commands.demo", "a complete offline session: sandbox + daemon, Enter is the button"),
    "check-config": ("kiosk.commands.check_config", "validate a config file and print the effective settings"),
    "devices": ("kiosk.commands.devices", "list audio inputs and outputs with their native rates and channels"),
    "doctor": ("kiosk.commands.doctor", "test the broker (and optionally the room) step by step, with timings"),
    "status": ("kiosk.commands.control", "show the running daemon's state"),
    "press": ("kiosk.commands.control", "press the button through the control socket"),
    "say": ("kiosk.commands.control", "send a text message into the live session"),
    "events": ("kiosk.commands.control", "follow state changes and live captions (--json: JSON lines)"),
    "test": ("kiosk.commands.hwtest", "try the hardware: mic level meter, speaker, LEDs, button (daemon stopped)"),
    "screen": ("kiosk.commands.screen", "serve the visitor-facing page (state, captions, start/end, typed text)"),
    "sandbox": ("kiosk.commands.sandbox", "run a local LiveKit-compatible server, broker and scripted agent"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"kiosk {__version__}: the voice kiosk daemon and its tools",
        "",
        "usage: kiosk COMMAND [options]     (kiosk COMMAND --help for a command's options)",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {description}" for name, (_, description) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kiosk`` script; a reader that went away (``kiosk -h | head -2``) ends it quietly."""
    try:
        try:
            return _dispatch(list(sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()  # a block-buffered pipe fails here (also after --help), not at interpreter exit
    except BrokenPipeError:
        quiet_broken_pipe()
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0 if args else 2
    if args[0] in {"-V", "--version"}:
        print(f"kiosk {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" Did you mean 'kiosk {close[0]}'?" if close else ""
        print(f"kiosk: unknown command {name!r}.{hint} Run 'kiosk --help' for the list.", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if module.__name__ == "kiosk.commands.control":
        return int(module.main([name, *rest]))
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
