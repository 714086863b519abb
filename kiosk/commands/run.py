"""``kiosk run``: the daemon itself, as systemd starts it."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os

from kiosk.cliformat import HelpFormatter
from kiosk.configfile import resolve_path


def main(argv: list[str]) -> int:
    """Run the daemon until SIGTERM; the exit status tells systemd whether to restart (78: do not)."""
    parser = argparse.ArgumentParser(
        prog="kiosk run", description="Run the kiosk daemon (what systemd starts).", formatter_class=HelpFormatter
    )
    parser.add_argument("--config", help="config file (default: $KIOSK_CONFIG, else /etc/kiosk/kiosk.toml)")
    args = parser.parse_args(argv)
    # A crash in native code (PortAudio, ALSA, the LiveKit FFI) prints every thread's Python stack to stderr,
    # which systemd puts in the journal beside the daemon's own lines.
    faulthandler.enable(all_threads=True)
    from kiosk.audio.worker import STUCK
    from kiosk.daemon.app import run

    code = asyncio.run(run(resolve_path(args.config)))
    if STUCK.is_set():
        # A device hangs inside PortAudio: its exit handler would wait on it or abort the process. Everything of
        # ours is closed and logged; leave without running exit handlers, with the daemon's own exit status.
        logging.shutdown()
        os._exit(code)
    return code
