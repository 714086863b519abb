"""The control socket over a real Unix socket: requests, answers, the events stream, and helpful errors."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiosk.commands.control import format_status, request_once
from kiosk.daemon.control_socket import ControlServer, EventBus
from kiosk.errors import ControlError


class FakeController:
    """Answers like the daemon would, and remembers what it was asked."""

    def __init__(self) -> None:
        self.presses = 0
        self.said: list[str] = []

    def status(self) -> dict[str, Any]:
        """A fixed status."""
        return {"state": "idle", "counters": {"presses": self.presses}}

    def press(self) -> dict[str, Any]:
        """Count the press."""
        self.presses += 1
        return {"state": "connecting", "did": "started a session"}

    async def say(self, text: str) -> dict[str, Any]:
        """Refuse when told to, else remember."""
        if text == "fail":
            raise ValueError("no live session (state idle): press first, then say")
        self.said.append(text)
        return {"sent": text}


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    """A control server on a temporary socket with a fake controller."""
    controller = FakeController()
    events = EventBus(depth=4)
    srv = ControlServer(path=tmp_path / "run" / "control.sock", mode=0o660, controller=controller, events=events)
    await srv.start()
    yield srv, controller, events
    await srv.close()


async def _raw(path: Path, payload: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 5)
    writer.write(payload)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    answer: dict[str, Any] = json.loads(line)
    return answer


async def test_status_press_say(server: Any) -> None:
    """status, press and say answer one JSON line each; the socket has the configured mode."""
    srv, controller, _ = server
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o660
    status = await asyncio.to_thread(request_once, srv.path, {"cmd": "status"})
    assert status == {"ok": True, "state": "idle", "counters": {"presses": 0}}
    pressed = await asyncio.to_thread(request_once, srv.path, {"cmd": "press"})
    assert pressed["did"] == "started a session" and controller.presses == 1
    said = await asyncio.to_thread(request_once, srv.path, {"cmd": "say", "text": "hi"})
    assert said == {"ok": True, "sent": "hi"} and controller.said == ["hi"]
    refused = await asyncio.to_thread(request_once, srv.path, {"cmd": "say", "text": "fail"})
    assert refused == {"ok": False, "error": "no live session (state idle): press first, then say"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"not json\n", "request is not JSON"),
        (b'{"cmd": "dance"}\n', "unknown command: "),
        (b'{"verb": "status"}\n', 'request has no "cmd"'),
        (b'{"cmd": "say", "text": "  "}\n', 'say needs a non-empty "text"'),
        (b"\n", "empty request"),
    ],
)
async def test_bad_requests_get_clear_errors(server: Any, payload: bytes, expected: str) -> None:
    """A bad request is answered with an error naming the problem and the commands."""
    srv, _, _ = server
    answer = await _raw(srv.path, payload)
    assert answer["ok"] is False
    assert expected in answer["error"]


async def test_events_stream_and_slow_reader(server: Any) -> None:
    """events sends the current state, then each published event; a full queue drops the oldest."""
    srv, _, bus = server
    reader, writer = await asyncio.open_unix_connection(str(srv.path))
    writer.write(b'{"cmd": "events"}\n')
    await writer.drain()
    assert json.loads(await asyncio.wait_for(reader.readline(), 5)) == {"ok": True, "streaming": "events"}
    first = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert first["type"] == "state" and first["state"] == "idle"
    for n in range(10):
        bus.publish({"type": "transcript", "n": n})
    got = [json.loads(await asyncio.wait_for(reader.readline(), 5))["n"] for _ in range(4)]
    assert got[-1] == 9 and len(got) == 4
    writer.close()


async def test_stale_socket_is_replaced_and_live_one_refused(tmp_path: Path) -> None:
    """A socket file left by a crash is replaced; one another daemon serves is not."""
    path = tmp_path / "control.sock"
    path.write_text("stale")
    first = ControlServer(path=path, mode=0o600, controller=FakeController(), events=EventBus())
    await first.start()
    second = ControlServer(path=path, mode=0o600, controller=FakeController(), events=EventBus())
    with pytest.raises(OSError, match="in use"):
        await second.start()
    await first.close()
    assert not path.exists()


def test_missing_socket_says_daemon_not_running(tmp_path: Path) -> None:
    """`kiosk status` without a daemon says it is not running and how to start it."""
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "status", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "no control socket at" in result.stderr
    # Which hint depends on whether some kiosk daemon runs on this machine; each says what to check.
    hints = ("daemon is not running", "is the daemon running", "a kiosk daemon is running but not on this socket")
    assert any(hint in result.stderr for hint in hints), result.stderr
    with pytest.raises(ControlError, match="no control socket"):
        request_once(tmp_path / "none.sock", {"cmd": "status"})


def test_format_status_is_readable() -> None:
    """The human status names state, session, last end, counters and versions."""
    text = format_status(
        {
            "state": "live",
            "agent": "speaking",
            "session": {"id": 3, "room": "r1", "duration_s": 12.0},
            "last_end": {"reason": "failure", "failure": "broker_timeout"},
            "counters": {"sessions": 3},
            "versions": {"kiosk": "0.1.0"},
        }
    )
    assert "live (speaking)" in text and "#3 room r1" in text and "failure (broker_timeout)" in text


async def test_stopping_with_an_events_client_attached_is_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing the server hangs up on an attached ``kiosk events`` client without a traceback anywhere."""
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    srv = ControlServer(path=tmp_path / "control.sock", mode=0o600, controller=FakeController(), events=EventBus())
    await srv.start()
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(tmp_path / "control.sock")), 5)
    writer.write(b'{"cmd": "events"}\n')
    await writer.drain()
    assert json.loads(await asyncio.wait_for(reader.readline(), 5))["streaming"] == "events"
    await asyncio.wait_for(reader.readline(), 5)  # the status line
    await asyncio.wait_for(srv.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    for _ in range(3):
        await asyncio.sleep(0)  # done callbacks of the server's client task run here
    loop.set_exception_handler(None)
    assert unhandled == []
    assert "Traceback" not in caplog.text and "CancelledError" not in caplog.text
