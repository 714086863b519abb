"""``kiosk run``: the daemon itself, as systemd starts it."""

from __future__ import annotations

import argparse
import asyncio

from kiosk.cliformat import HelpFormatter
from kiosk.configfile import resolve_path


def main(argv: list[str]) -> int:
    """Run the daemon until SIGTERM; the exit status tells systemd whether to restart (78: do not)."""
    parser = argparse.ArgumentParser(
        prog="kiosk run", description="Run the kiosk daemon (what systemd starts).", formatter_class=HelpFormatter
    )
    parser.add_argument("--config", help="config file (default: $KIOSK_CONFIG, else /etc/kiosk/kiosk.toml)")
    args = parser.parse_args(argv)
    from kiosk.daemon.app import run

    return asyncio.run(run(resolve_path(args.config)))
