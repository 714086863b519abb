"""``kiosk screen``: serve the visitor-facing page, fed by the running daemon's control socket.

It runs beside the daemon (the ``kiosk-screen`` service), reads the same config file for ``[screen]``,
``device.name`` and ``control.socket``, and never reads the broker's key. Stop it with SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from kiosk.cliformat import HelpFormatter, describe
from kiosk.config import KioskConfig
from kiosk.configfile import EX_CONFIG, load_config, resolve_path
from kiosk.errors import ConfigError

EX_UNAVAILABLE = 69


def main(argv: list[str]) -> int:
    """Run ``kiosk screen``."""
    parser = argparse.ArgumentParser(prog="kiosk screen", description=describe(__doc__), formatter_class=HelpFormatter)
    parser.add_argument("--config", help="config file (default: $KIOSK_CONFIG or /etc/kiosk/kiosk.toml)")
    parser.add_argument("--port", type=int, help="listen on this port instead of screen.port (0: any free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(resolve_path(args.config))
    except ConfigError as exc:
        print(f"kiosk screen: {exc}", file=sys.stderr)
        return EX_CONFIG
    if not config.screen.enabled:
        print("kiosk screen: the screen is turned off: set enabled = true in [screen] of the config", file=sys.stderr)
        return EX_CONFIG
    return asyncio.run(_serve(config, args.port))


async def _serve(config: KioskConfig, port: int | None) -> int:
    from kiosk.screen.service import ScreenService

    try:
        service = ScreenService(config=config, port=port)
    except ConfigError as exc:
        print(f"kiosk screen: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        url = await service.start()
    except OSError as exc:
        print(
            f"kiosk screen: cannot listen on {config.screen.bind}:{port or config.screen.port}: {exc}", file=sys.stderr
        )
        return EX_UNAVAILABLE
    print(f"kiosk screen: serving {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await service.close()
    return 0
