"""DNS down or a name that does not exist: ``broker_unresolvable`` with the fix in words, never "broker timeout".

Through ``kiosk run`` with a resolver of the test's own (:mod:`tests.fixtures.dns`: no lookup leaves the machine),
and at the HTTP layer with the event loop's ``getaddrinfo`` (which httpx uses too) replaced.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiosk.broker.http import BrokerHttp
from kiosk.commands.control import request_once
from kiosk.errors import BrokerError
from kiosk.reasons import FailureReason
from tests.fixtures.audio import PulseServer
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.dns import fake_dns, resolver_prefix
from tests.fixtures.kiosk_process import DEVICES, KEY_ENV, kiosk_run
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until_sync


@pytest.mark.pulse
@pytest.mark.parametrize(
    ("mode", "says"),
    [("nxdomain", "does not exist in DNS"), ("silent", "did not answer")],
    ids=["name-does-not-exist", "dns-down"],
)
def test_a_press_with_an_unresolvable_broker_name_is_named_as_such(
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    tmp_path: Path,
    mode: str,
    says: str,
) -> None:
    """broker.url's name does not resolve: failure broker_unresolvable naming the host and what to check; the
    daemon answers its control socket throughout (the lookup never blocks its event loop)."""
    config = daemon_config(
        http_url="https://kiosk-broker.invalid", tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES, connect_timeout_s=3
    )
    socket_path, log = tmp_path / "control.sock", tmp_path / "daemon.log"
    prefix = resolver_prefix(tmp_path)
    with (
        fake_dns(mode),
        kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log, prefix=prefix) as daemon,
    ):
        assert request_once(socket_path, {"cmd": "press"})["did"] == "started a session"
        states: list[str] = []

        def ended() -> dict[str, Any] | None:
            status: dict[str, Any] = request_once(socket_path, {"cmd": "status"})
            states.append(status["state"])
            return status if status["last_end"] is not None else None

        last = until_sync(ended, 30, "the session's end", details=lambda: log.read_text()[-3000:])
        seen_connecting = states.count("connecting")
        assert last["last_end"]["failure"] == "broker_unresolvable", log.read_text()[-3000:]
        assert seen_connecting > 0
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    output = log.read_text()
    assert f"'kiosk-broker.invalid' {says}" in output, output[-3000:]
    assert "resolv.conf" in output and "Traceback" not in output and sandbox.api_key not in output


async def _post(http: BrokerHttp, *, within: float) -> BrokerError:
    deadline = time.monotonic() + within
    with pytest.raises(BrokerError) as caught:
        await http.post(
            "https://kiosk-broker.invalid/v1/sessions/start", {}, deadline=deadline, repeatable=False, what="start"
        )
    return caught.value


async def test_a_hung_lookup_is_unresolvable_and_the_loop_keeps_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo that never returns: broker_unresolvable before the deadline; the loop ticks all along."""
    loop = asyncio.get_running_loop()
    never = asyncio.Event()

    async def hung(*args: Any, **kwargs: Any) -> Any:
        await never.wait()

    monkeypatch.setattr(loop, "getaddrinfo", hung)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.ensure_future(tick())
    async with httpx.AsyncClient() as client, asyncio.timeout(10):
        http = BrokerHttp(client=client, dialect="lyzr", timeout_s=5.0, secret=None)
        error = await _post(http, within=1.0)
    ticker.cancel()
    assert error.reason == FailureReason.BROKER_UNRESOLVABLE, error
    assert "'kiosk-broker.invalid' did not answer" in str(error)
    assert ticks > 10


async def test_a_failed_lookup_is_unresolvable(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo failing with EAI_NONAME: broker_unresolvable naming broker.url."""
    loop = asyncio.get_running_loop()

    async def nxdomain(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", nxdomain)
    async with httpx.AsyncClient() as client, asyncio.timeout(10):
        http = BrokerHttp(client=client, dialect="lyzr", timeout_s=5.0, secret=None)
        error = await _post(http, within=1.0)
    assert error.reason == FailureReason.BROKER_UNRESOLVABLE, error
    assert "does not exist in DNS" in str(error) and "broker.url" in str(error)
