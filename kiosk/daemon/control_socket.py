"""The control socket: JSON lines over a Unix stream socket, for ``kiosk status|press|say|events``.

Protocol: the client sends one JSON object on one line, ``{"cmd": "status"}``, ``{"cmd": "press"}``,
``{"cmd": "say", "text": "..."}`` or ``{"cmd": "events"}``. The daemon answers one line, ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``; for ``events`` it then streams one JSON line per state change or caption update
until the client hangs up. A slow ``events`` reader loses its oldest lines rather than slowing the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
MAX_CLIENTS = 16
COMMANDS = ("status", "press", "say", "events")


class Controller(Protocol):
    """What the control socket asks of the daemon."""

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot of the daemon."""

    def press(self) -> dict[str, Any]:
        """Press the button; returns what the press did."""

    def say(self, text: str) -> Awaitable[dict[str, Any]]:
        """Send a text message into the live session."""


class EventBus:
    """Fan-out of JSON-able events to any number of bounded subscriber queues."""

    def __init__(self, *, depth: int = 256) -> None:
        self._depth = depth
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every subscriber, dropping a slow subscriber's oldest event."""
        for queue in self._subscribers:
            if queue.qsize() >= self._depth:
                queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """Start receiving events."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop receiving events."""
        self._subscribers.discard(queue)


class ControlServer:
    """Serves the control protocol on a Unix socket with the configured mode."""

    def __init__(self, *, path: Path, mode: int, controller: Controller, events: EventBus) -> None:
        self.path = path
        self._mode = mode
        self._controller = controller
        self._events = events
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind the socket (replacing a stale one left by a crash) and start serving."""
        if self.path.exists() or self.path.is_symlink():
            if _in_use(self.path):
                raise OSError(f"control socket {self.path} is in use: is another kiosk daemon running?")
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        self.path.chmod(self._mode)
        log.info("control socket at %s (mode %04o)", self.path, self._mode)

    async def close(self) -> None:
        """Stop serving, hang up on clients and remove the socket."""
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(self._clients, timeout=2)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > MAX_CLIENTS:
                await _send(writer, _error(f"too many control clients (at most {MAX_CLIENTS}); try again"))
                return
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            log.debug("control client went away")
        except asyncio.CancelledError:
            # close() hangs up on clients (a `kiosk events` follower waits forever): the end of this task, not an
            # error. Re-raised, asyncio's stream server would log it as a failed callback.
            log.debug("control client hung up: the daemon is stopping")
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout=1)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
        except (ValueError, asyncio.LimitOverrunError):
            await _send(writer, _error(f"request longer than {MAX_REQUEST} bytes"))
            return
        except TimeoutError:
            await _send(writer, _error('no request within 10 s: send one JSON line, e.g. {"cmd": "status"}'))
            return
        request, problem = _parse(line)
        if request is None:
            await _send(writer, _error(problem))
            return
        command = request["cmd"]
        if command == "events":
            await self._stream_events(writer)
            return
        handlers: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "status": lambda: _now(self._controller.status()),
            "press": lambda: _now(self._controller.press()),
            "say": lambda: self._controller.say(str(request.get("text", ""))),
        }
        try:
            answer = await handlers[command]()
        except ValueError as exc:
            answer = _error(str(exc))
        except Exception as exc:
            # Supervisor boundary of one request: the daemon goes on, the client hears what failed.
            log.exception("control request %r failed", command)
            answer = _error(f"{command} failed: {type(exc).__name__}; see the daemon's log")
        await _send(writer, {"ok": True, **answer} if "ok" not in answer else answer)

    async def _stream_events(self, writer: asyncio.StreamWriter) -> None:
        queue = self._events.subscribe()
        try:
            await _send(writer, {"ok": True, "streaming": "events"})
            await _send(writer, {"type": "state", **self._controller.status()})
            while True:
                await _send(writer, await queue.get())
        finally:
            self._events.unsubscribe(queue)


async def _now(value: dict[str, Any]) -> dict[str, Any]:
    return value


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str]:
    usage = 'send one JSON line such as {"cmd": "status"}; commands: ' + ", ".join(COMMANDS)
    if not line.strip():
        return None, f"empty request: {usage}"
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"request is not JSON ({exc.__class__.__name__}): {usage}"
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return None, f'request has no "cmd": {usage}'
    if request["cmd"] not in COMMANDS:
        # The command is not echoed back: a client that pasted something else (a key) into it must not see it again.
        return None, f"unknown command: {usage}"
    if request["cmd"] == "say" and not str(request.get("text", "")).strip():
        return None, 'say needs a non-empty "text"'
    return request, ""


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def _send(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
    writer.write(json.dumps(payload, separators=(",", ":")).encode() + b"\n")
    await asyncio.wait_for(writer.drain(), timeout=5)


def _in_use(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
