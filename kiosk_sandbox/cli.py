"""``kiosk sandbox``: run the room server, the broker and the scripted agent in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from kiosk.cliformat import HelpFormatter
from kiosk_sandbox.agent_behaviours import AGENT_BEHAVIOURS
from kiosk_sandbox.ready import READY_PREFIX
from kiosk_sandbox.resume import DEFAULT_DEPARTURE_TIMEOUT_S
from kiosk_sandbox.server import AGENT_MODES, Sandbox

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kiosk sandbox``."""
    parser = argparse.ArgumentParser(
        prog="kiosk sandbox",
        description="Run a local LiveKit server, vendor broker and voice agent.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7880, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("KIOSK_SANDBOX_API_KEY"),
        help="broker API key (x-api-key) (default: $KIOSK_SANDBOX_API_KEY, else generated)",
    )
    parser.add_argument("--livekit-api-key", default=None, help="LiveKit API key for self-minted tokens")
    parser.add_argument("--livekit-api-secret", default=None, help="LiveKit API secret for self-minted tokens")
    parser.add_argument(
        "--agent",
        choices=AGENT_MODES,
        default="scripted",
        help="who joins a session as its agent: the built-in scripted agent (default), a job for the livekit-agents "
        "workers registered at /agent, or none (an outside participant with an agent token joins by itself)",
    )
    parser.add_argument("--agent-no-show", type=float, default=60.0, help="seconds the agent waits for a visitor")
    parser.add_argument(
        "--agent-behaviour",
        choices=AGENT_BEHAVIOURS,
        default="converse",
        help="what the scripted agent does: converse, end_call (goodbye then DeleteRoom after the first turn) or "
        "stuck (claims 'speaking' after the first turn, sends no audio); per session: agent name '<name>:<behaviour>'",
    )
    parser.add_argument(
        "--departure-timeout",
        type=float,
        default=DEFAULT_DEPARTURE_TIMEOUT_S,
        help="seconds a participant whose signal is gone is kept for a resume before it is removed",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def key_files(sb: Sandbox) -> tuple[Path, Path]:
    """The sandbox's broker key and LiveKit secret files, in its own state directory (never /etc/kiosk)."""
    return sb.state_dir / "broker-api-key", sb.state_dir / "livekit-api-secret"


def write_key_files(sb: Sandbox) -> None:
    """Write the sandbox's keys, mode 0600, where :func:`banner`'s config blocks point."""
    for path, value in zip(key_files(sb), (sb.api_key, sb.livekit_api_secret), strict=True):
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(value + "\n", encoding="utf-8")


def agent_lines(sb: Sandbox) -> list[str]:
    """What the banner says about who plays the agent (``--agent``)."""
    if sb.agent_mode == "workers":
        return [
            "  agent            livekit-agents workers: each session's room becomes a job for a worker registered",
            f"                   at {sb.ws_url}/agent under the broker's agent name (or under none), e.g.",
            f"                   LIVEKIT_URL={sb.ws_url} LIVEKIT_API_KEY={sb.livekit_api_key} "
            f'LIVEKIT_API_SECRET="$(cat {key_files(sb)[1]})" python my_agent.py start',
            f"  workers          {sb.http_url}/sandbox/workers",
        ]
    if sb.agent_mode == "none":
        return [
            "  agent            none is sent: an outside participant with a token of kind agent joins by itself",
            f"                   (sign it with the LiveKit API key below and the secret in {key_files(sb)[1]})",
        ]
    return ["  agent            the built-in scripted agent joins each session"]


def banner(sb: Sandbox) -> str:
    """The human-readable summary: URLs, keys, who plays the agent, and a ``[broker]`` block per dialect."""
    broker_key, livekit_secret = key_files(sb)
    return "\n".join(
        [
            f"kiosk sandbox: LiveKit room server + broker + agent ({sb.agent_mode})",
            *agent_lines(sb),
            f"  LiveKit URL      {sb.ws_url}",
            f"  broker URL       {sb.http_url}",
            f"  broker API key   {sb.api_key}",
            f"  sessions         {sb.http_url}/sandbox/sessions",
            f"  LiveKit API key  {sb.livekit_api_key}",
            "",
            f"The sandbox's keys are in {broker_key} and {livekit_secret} (mode 600; the config never holds a key",
            "itself). Paste one of these into a kiosk config of your own (not the installed /etc/kiosk/kiosk.toml):",
            "",
            "# Lyzr",
            "[broker]",
            'dialect = "lyzr"',
            f'url = "{sb.http_url}"',
            'agent_id = "sandbox-agent"',
            f'api_key_file = "{broker_key}"',
            "",
            "# Oshara",
            "[broker]",
            'dialect = "oshara"',
            f'url = "{sb.http_url}"',
            'agent_id = "sandbox-agent"',
            f'api_key_file = "{broker_key}"',
            "",
            "# LiveKit standard token endpoint",
            "[broker]",
            'dialect = "livekit"',
            f'url = "{sb.http_url}/api/token"',
            'agent_name = "sandbox-agent"',
            f'api_key_file = "{broker_key}"',
            "",
            "# self-minted tokens: the key file holds the LiveKit API secret instead",
            "[broker]",
            'dialect = "self"',
            f'livekit_url = "{sb.ws_url}"',
            f'livekit_api_key = "{sb.livekit_api_key}"',
            f'api_key_file = "{livekit_secret}"',
            'agent_name = "sandbox-agent"',
            "",
            "Ctrl-C stops the sandbox.",
        ]
    )


def ready_line(sb: Sandbox) -> str:
    """The machine-readable ``SANDBOX READY {...}`` line for parents running the sandbox as a subprocess."""
    info = {
        "http_url": sb.http_url,
        "ws_url": sb.ws_url,
        "api_key": sb.api_key,
        "livekit_api_key": sb.livekit_api_key,
        "livekit_api_secret": sb.livekit_api_secret,
        "state_dir": str(sb.state_dir),
        "agent_mode": sb.agent_mode,
    }
    return READY_PREFIX + json.dumps(info)


async def serve(args: argparse.Namespace) -> int:
    """Run the sandbox until SIGINT or SIGTERM."""
    sandbox = Sandbox(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        livekit_api_key=args.livekit_api_key,
        livekit_api_secret=args.livekit_api_secret,
        agent_no_show_s=args.agent_no_show,
        agent_mode=args.agent,
        agent_behaviour=args.agent_behaviour,
        departure_timeout_s=args.departure_timeout,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sandbox.start()
    except OSError as exc:
        sys.stderr.write(f"kiosk sandbox: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 69
    try:
        write_key_files(sandbox)
        _say(banner(sandbox))
        _say(ready_line(sandbox))
        await stop.wait()
        _say("kiosk sandbox: stopping")
    finally:
        await sandbox.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kiosk sandbox``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("aioice", "aiortc", "livekit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return asyncio.run(serve(args))
