"""The command line the baseline client processes share (``bench.mdcall``, ``bench.platformcall``).

Kept apart from :mod:`bench.common` so that a baseline process imports nothing the client itself does not need: its
RSS and CPU are the client's own.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable


def baseline_client_main(
    argv: list[str] | None, *, prog: str, description: str | None, call: Callable[[str, float], Awaitable[None]]
) -> int:
    """Parse ``--url HTTP_URL --seconds S`` and run ``call(url, seconds)``; returns the exit status (0)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    asyncio.run(call(args.url, args.seconds))
    return 0
