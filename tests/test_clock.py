"""Whose clock is wrong: the broker's Date header, the token's window, and the LiveKit server's verdict."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import time

import jwt
import pytest
from aiohttp import web
from livekit import rtc

from kiosk.broker import ServerClock, decode_token, make_client
from kiosk.broker.connection import ConnectionDetails, EndTicket, clock_problem
from kiosk.commands.doctor import _check_expiry
from kiosk.config import BrokerConfig
from kiosk.daemon.sessionsummary import connect_failure
from kiosk.errors import BrokerError, ClockError
from kiosk.reasons import FailureReason
from tests.fixtures.sandbox import SandboxHandle

HOUR = 3600.0
KEY = "a-test-signing-key-long-enough-for-hs256"


def http_date(offset_s: float, *, now: float) -> str:
    """An HTTP Date header ``offset_s`` from ``now``."""
    return email.utils.format_datetime(dt.datetime.fromtimestamp(now + offset_s, dt.UTC), usegmt=True)


def sandbox_token(sandbox: SandboxHandle, room: str, *, nbf: float, exp: float) -> str:
    """A join token for the sandbox signed with its real secret, with the given validity window."""
    claims = {
        "sub": "kiosk-clock",
        "iss": sandbox.livekit_api_key,
        "nbf": int(nbf),
        "exp": int(exp),
        "video": {"room": room, "roomJoin": True},
    }
    return jwt.encode(claims, sandbox.livekit_api_secret, algorithm="HS256")


def grant_for(token: str, now: float) -> ConnectionDetails:
    """A grant as the broker client builds it, with its local clock problem noted."""
    claims = decode_token(token, dialect="self")
    ticket = EndTicket(dialect="self", url=None, room=claims.room or "r", identity="kiosk-clock")
    return ConnectionDetails(
        dialect="self",
        server_url="ws://127.0.0.1",
        token=token,  # type: ignore[arg-type]
        room=ticket.room,
        identity="kiosk-clock",
        expires_at=claims.expires_at,
        not_before=claims.not_before,
        ticket=ticket,
        local_clock_problem=clock_problem(claims, now=now),
    )


def test_server_clock_reads_the_date_header_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """A skew past a minute is a warning once (with the time-sync hint), then debug; a small one is fine."""
    now = time.time()
    clock = ServerClock(now=lambda: now)
    clock.note(http_date(-20, now=now))
    assert clock.skew_s == pytest.approx(20, abs=1) and not clock.wrong
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        clock.note(http_date(2 * HOUR, now=now))
    assert clock.wrong and clock.describe() == "behind"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "timedatectl" in warnings[0].getMessage()
    clock.note("not a date")
    assert clock.wrong


async def test_the_broker_clients_hook_follows_a_real_http_date(unused_tcp_port: int) -> None:
    """Through httpx and a real HTTP server on 127.0.0.1 whose Date is two hours ahead."""
    now = time.time()

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(headers={"Date": http_date(2 * HOUR, now=time.time())})

    app = web.Application()
    app.router.add_route("*", "/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    clock = ServerClock()
    try:
        async with make_client(BrokerConfig(dialect="livekit", url="https://x"), server_clock=clock) as client:
            await asyncio.wait_for(client.head(f"http://127.0.0.1:{unused_tcp_port}/"), 10)
    finally:
        await runner.cleanup()
    assert clock.skew_s is not None and clock.skew_s == pytest.approx(-2 * HOUR, abs=60)
    assert time.time() - now < HOUR


@pytest.mark.parametrize(
    ("date_offset_s", "nbf_offset_s", "reason"),
    [
        (2 * HOUR, 2 * HOUR, FailureReason.CLOCK),  # the local clock is two hours behind the broker's
        (0.0, 2 * HOUR, FailureReason.CLOCK),  # no broker Date skew, but the token looked unusable locally
        (0.0, 0.0, FailureReason.CONNECT_FAILED),  # both clocks agree and the token looked fine: not the clock
    ],
    ids=["skewed", "token-window", "clocks-agree"],
)
async def test_a_token_the_server_refuses_is_blamed_on_the_clock_only_when_a_clock_disagrees(
    sandbox: SandboxHandle, date_offset_s: float, nbf_offset_s: float, reason: FailureReason
) -> None:
    """The real LiveKit SDK against the sandbox: its 401 plus a clock disagreement is ``clock``."""
    now = time.time()
    if nbf_offset_s:
        token = sandbox_token(sandbox, "clock-room", nbf=now + nbf_offset_s, exp=now + nbf_offset_s + 600)
    else:  # a token the server refuses for another reason: signed with the wrong secret
        token = jwt.encode(
            {
                "sub": "k",
                "iss": sandbox.livekit_api_key,
                "nbf": int(now),
                "exp": int(now + 600),
                "video": {"room": "r"},
            },
            "not-the-sandbox-secret-but-long-enough-for-hs256",
            algorithm="HS256",
        )
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError) as refused:
        async with asyncio.timeout(15):
            await room.connect(sandbox.ws_url, token)
    clock = ServerClock(now=lambda: now)
    clock.note(http_date(date_offset_s, now=now))
    named, why = connect_failure(refused.value, grant_for(token, now), clock)
    assert named == reason
    if reason == FailureReason.CLOCK:
        assert "timedatectl" in why


def test_doctor_judges_the_token_by_the_brokers_clock_and_the_local_one() -> None:
    """Expired before it arrived (by the broker's own clock) is the broker's fault; a skew is the clock's."""
    now = time.time()
    fresh = jwt.encode({"exp": int(now + 600), "nbf": int(now), "video": {"room": "r"}}, KEY, algorithm="HS256")
    stale = jwt.encode({"exp": int(now - 120), "nbf": int(now - 720), "video": {"room": "r"}}, KEY, algorithm="HS256")
    in_sync = ServerClock(now=lambda: now)
    in_sync.note(http_date(0, now=now))
    assert "valid until" in _check_expiry(
        grant_for(fresh, now), decode_token(fresh, dialect="self"), in_sync, connect_s=10.0, now=now
    )
    with pytest.raises(BrokerError, match="not valid even by the broker's own clock") as stale_error:
        _check_expiry(grant_for(stale, now), decode_token(stale, dialect="self"), in_sync, connect_s=10.0, now=now)
    assert stale_error.value.reason == FailureReason.BROKER_MALFORMED
    # The local clock three minutes ahead: the broker minted the token by its own clock.
    skewed = ServerClock(now=lambda: now)
    skewed.note(http_date(-180, now=now))
    minted = jwt.encode({"exp": int(now + 420), "nbf": int(now - 180), "video": {"room": "r"}}, KEY, algorithm="HS256")
    with pytest.raises(ClockError, match=r"ahead of the broker's by 18[01] s"):
        _check_expiry(grant_for(minted, now), decode_token(minted, dialect="self"), skewed, connect_s=10.0, now=now)
