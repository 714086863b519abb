"""``kiosk status | press | say TEXT | events``: talk to the running daemon over its control socket.

Text for people by default; ``--json`` prints the daemon's answers (and, for ``events``, one JSON object per line).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

from kiosk.cliformat import HelpFormatter
from kiosk.commands.statusview import format_status
from kiosk.config import ControlConfig
from kiosk.configfile import load_config, resolve_path
from kiosk.errors import ConfigError, ControlError

__all__ = ["format_status", "main", "request_once", "socket_path"]

DESCRIPTIONS = {
    "status": "show the running daemon's state",
    "press": "press the button through the control socket",
    "say": "send a text message into the live session",
    "events": "follow state changes and live captions (--json: as JSON lines)",
}


def main(argv: list[str]) -> int:
    """Run one of the control commands; ``argv[0]`` names it."""
    command, rest = argv[0], argv[1:]
    parser = argparse.ArgumentParser(
        prog=f"kiosk {command}", description=DESCRIPTIONS[command].capitalize() + ".", formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--config", help="config file, to find control.socket (default: $KIOSK_CONFIG, else /etc/kiosk/kiosk.toml)"
    )
    parser.add_argument("--socket", help="control socket path (default: the config's control.socket)")
    parser.add_argument("--json", action="store_true", help="print the daemon's JSON instead of text")
    if command == "say":
        parser.add_argument("text", nargs="+", help="the message")
    args = parser.parse_args(rest)
    path = socket_path(args.socket, args.config)
    request: dict[str, Any] = {"cmd": command}
    if command == "say":
        request["text"] = " ".join(args.text)
    try:
        if command == "events":
            return _follow(path, request, as_json=args.json)
        answer = request_once(path, request)
    except ControlError as exc:
        print(f"kiosk {command}: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"kiosk {command}: {answer.get('error', 'the daemon refused the request')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2 if command == "status" else None))
    elif command == "status":
        print(format_status(answer))
    elif command == "press":
        print(f"{answer.get('did', 'pressed')} (state now {answer.get('state', '?')})")
    else:
        print(f"sent: {answer.get('sent', request.get('text'))}")
    return 0


def socket_path(cli_socket: str | None, cli_config: str | None) -> Path:
    """The socket from ``--socket``, else the config's ``control.socket``, else the default."""
    if cli_socket:
        return Path(cli_socket)
    try:
        return load_config(resolve_path(cli_config)).control.socket
    except ConfigError:
        return ControlConfig().socket


def _connect(path: Path, timeout: float) -> socket.socket:
    try:
        present = path.exists()
    except PermissionError:
        raise ControlError(
            f"permission denied on {path.parent}: run as root or add yourself to the service's group "
            "(sudo usermod -aG kiosk $USER, then log in again)"
        ) from None
    if not present:
        raise ControlError(f"no control socket at {path}: {_daemon_hint()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except PermissionError:
        sock.close()
        raise ControlError(
            f"permission denied on {path}: run as root or add yourself to the service's group "
            "(sudo usermod -aG kiosk $USER, then log in again)"
        ) from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot connect to {path} ({exc.strerror}): {_daemon_hint()}") from None
    return sock


def request_once(path: Path, request: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """Send one request and return the daemon's one-line answer."""
    try:
        with _connect(path, timeout) as sock, sock.makefile("rwb") as stream:
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            line = stream.readline()
    except TimeoutError:
        raise ControlError(
            f"the daemon did not answer on {path} within {timeout:.0f} s (is it stuck? journalctl -u kiosk)"
        ) from None
    except OSError as exc:
        raise ControlError(f"talking to the daemon on {path} failed: {exc.strerror or exc}") from None
    if not line:
        raise ControlError(f"the daemon closed {path} without answering (see journalctl -u kiosk)")
    try:
        answer: dict[str, Any] = json.loads(line)
    except ValueError:
        raise ControlError(f"the daemon's answer on {path} is not JSON: is this a kiosk control socket?") from None
    return answer


def _follow(path: Path, request: dict[str, Any], *, as_json: bool) -> int:
    with _connect(path, 10.0) as sock, sock.makefile("rwb") as stream:
        sock.settimeout(None)
        stream.write(json.dumps(request).encode() + b"\n")
        stream.flush()
        try:
            for line in stream:
                text = line.decode() if as_json else format_event(json.loads(line)) + "\n"
                sys.stdout.write(text)
                sys.stdout.flush()
        except KeyboardInterrupt:
            return 0
    return 0


def format_event(event: dict[str, Any]) -> str:
    """One ``kiosk events`` line for people: a state change, a transcript line, an audio report."""
    kind = event.get("type")
    if kind == "state":
        detail = [f"session #{event.get('session')}"]
        if event.get("agent"):
            detail.append(f"agent {event['agent']}")
        if event.get("failure") or event.get("reason"):
            detail.append(str(event.get("failure") or event.get("reason")))
        return f"state  {event.get('state')}  ({', '.join(detail)})"
    if kind == "transcript":
        return f"{event.get('role', '?'):>7}: {event.get('text', '')}"
    if kind == "audio":
        state = "ok" if event.get("ok") else "FAILED"
        return f"audio  {event.get('direction', '?')} {state}: {event.get('message', '')}"
    if kind == "controls":
        volume = round(float(event.get("volume") or 0) * 100)
        return f"controls  volume {volume} %, mic {'MUTED' if event.get('muted') else 'on'}"
    if event.get("ok") and event.get("streaming"):
        return "following the daemon's events (Ctrl-C stops)"
    return json.dumps(event)


def _daemon_hint() -> str:
    running = _daemon_running()
    if running is None:
        return "is the daemon running? (systemctl status kiosk)"
    if running:
        return "a kiosk daemon is running but not on this socket: check control.socket in its config (--config)"
    return "the kiosk daemon is not running (start it: sudo systemctl start kiosk; see journalctl -u kiosk)"


def _daemon_running() -> bool | None:
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if "run" in words and any(w.endswith("kiosk") or w == "kiosk" for w in words):
            return True
    return False
