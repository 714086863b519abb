"""Every named broker failure, over ``httpx.MockTransport``: reasons, retries, deadlines and messages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stamina

from kiosk.broker import Broker, make_broker
from kiosk.errors import BrokerError, SecretError
from kiosk.reasons import FailureReason
from kiosk.secret import SecretSource
from tests.fixtures.broker import API_KEY, FakeBroker, env_secret, lyzr_ok, make_config, reply, token


@pytest.fixture(autouse=True)
def fast_retries() -> Iterator[None]:
    """Three attempts, no waiting, unless a test turns testing mode off."""
    with stamina.set_testing(True, attempts=3):
        yield


def lyzr(fake: FakeBroker, tmp_path: Path, secret: SecretSource | None = None) -> Broker:
    """A Lyzr broker talking to ``fake``."""
    return make_broker(make_config("lyzr", tmp_path), client=fake.client(), secret=secret or env_secret())


async def fail(broker: Broker, within: float = 5.0) -> BrokerError:
    """Start, expecting a BrokerError, bounded by ``within`` seconds."""
    async with asyncio.timeout(within):
        with pytest.raises(BrokerError) as caught:
            await broker.start()
    assert API_KEY not in str(caught.value) and API_KEY not in repr(caught.value)
    return caught.value


async def test_unreachable_is_named_and_retried(tmp_path: Path) -> None:
    """A refused connection is broker_unreachable, retried (the request never left)."""
    fake = FakeBroker([httpx.ConnectError("[Errno 111] Connection refused")])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_UNREACHABLE
    assert "broker.test" in str(error) and "refused" in str(error)
    assert len(fake.requests) == 3


async def test_read_timeout_of_a_start_is_not_repeated(tmp_path: Path) -> None:
    """A start that may have reached Lyzr is not repeated (a second paid session could leak)."""
    fake = FakeBroker([httpx.ReadTimeout("timed out")])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_TIMEOUT
    assert len(fake.requests) == 1


async def test_read_timeout_of_a_token_request_is_retried(tmp_path: Path) -> None:
    """The LiveKit token endpoint only mints tokens, so a timed-out request is repeated."""
    fake = FakeBroker([httpx.ReadTimeout("timed out")])
    broker = make_broker(make_config("livekit", tmp_path), client=fake.client(), secret=env_secret())
    error = await fail(broker)
    assert error.reason == FailureReason.BROKER_TIMEOUT
    assert len(fake.requests) == 3


@pytest.mark.parametrize("status", [401, 403])
async def test_unauthorized_is_named_and_never_retried(tmp_path: Path, status: int) -> None:
    """401 and 403 are broker_unauthorized, tried once."""
    fake = FakeBroker([reply(status, {"message": "invalid x-api-key"})])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_UNAUTHORIZED
    assert len(fake.requests) == 1


async def test_rejected_carries_the_brokers_message_scrubbed_and_truncated(tmp_path: Path) -> None:
    """Another 4xx is broker_rejected with the broker's message, minus anything secret, truncated."""
    leaky = f"agentId unknown; you sent key {API_KEY} and token {token()} " + "x" * 500
    fake = FakeBroker([reply(422, {"detail": leaky})])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_REJECTED
    assert "agentId unknown" in str(error)
    assert "eyJ" not in str(error)
    assert len(str(error)) < 400
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_named_and_retried(tmp_path: Path, status: int) -> None:
    """5xx is broker_error, retried; a later success wins."""
    fake = FakeBroker([reply(status, {"message": "overloaded"}), reply(200, lyzr_ok())])
    async with asyncio.timeout(5):
        grant = await lyzr(fake, tmp_path).start()
    assert grant.room == "room-1"
    assert len(fake.requests) == 2
    fake = FakeBroker([reply(status, {"message": "overloaded"})])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_ERROR and "overloaded" in str(error)
    assert len(fake.requests) == 3


async def test_429_waits_what_retry_after_asks(tmp_path: Path) -> None:
    """A 429 is retried after its Retry-After (real waits here, not testing mode)."""
    fake = FakeBroker([reply(429, {"message": "slow down"}, **{"retry-after": "0.4"}), reply(200, lyzr_ok())])
    with stamina.set_testing(False):
        started = time.monotonic()
        async with asyncio.timeout(5):
            await lyzr(fake, tmp_path).start(deadline=time.monotonic() + 3)
    assert time.monotonic() - started >= 0.4
    assert len(fake.requests) == 2


async def test_429_with_retry_after_past_the_deadline_fails_at_once(tmp_path: Path) -> None:
    """A Retry-After beyond the connect budget is not waited for: the failure is named right away."""
    fake = FakeBroker([reply(429, {"message": "slow down"}, **{"retry-after": "30"})])
    with stamina.set_testing(False):
        started = time.monotonic()
        async with asyncio.timeout(5):
            with pytest.raises(BrokerError) as caught:
                await lyzr(fake, tmp_path).start(deadline=time.monotonic() + 2)
    assert caught.value.reason == FailureReason.BROKER_REJECTED and "rate limited" in str(caught.value)
    assert time.monotonic() - started < 1.0
    assert len(fake.requests) == 1


async def test_retries_stop_at_the_callers_deadline(tmp_path: Path) -> None:
    """Real jittered retries of a failing broker stop at the deadline with the last failure named.

    (No attempt is begun that cannot end before the deadline: the 503 is reported instead of waiting for nothing.)"""
    fake = FakeBroker([reply(503, {"message": "down"})])
    with stamina.set_testing(False):
        started = time.monotonic()
        async with asyncio.timeout(5):
            with pytest.raises(BrokerError) as caught:
                await lyzr(fake, tmp_path).start(deadline=time.monotonic() + 1.5)
    assert caught.value.reason == FailureReason.BROKER_ERROR
    # stopped by the 1.5 s deadline, not after stamina's own budget (45 s); generous for a loaded machine
    assert 0.1 < time.monotonic() - started < 4.0
    assert len(fake.requests) >= 2


async def test_non_json_answer_is_malformed(tmp_path: Path) -> None:
    """A 200 that is not JSON is broker_malformed."""
    fake = FakeBroker([httpx.Response(200, text="<html>gateway</html>")])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_MALFORMED


@pytest.mark.parametrize(
    ("dialect", "body", "field"),
    [
        ("lyzr", {"livekitUrl": "wss://lk.test", "roomName": "r"}, "userToken"),
        ("lyzr", {"userToken": "x", "roomName": "r"}, "livekitUrl"),
        ("oshara", {"success": True, "message": "ok"}, "data"),
        ("oshara", {"success": True, "data": {"livekit_url": "wss://lk.test"}}, "data.token"),
        ("livekit", {"server_url": "wss://lk.test"}, "participant_token"),
    ],
)
async def test_missing_fields_are_named_with_the_dialect(
    tmp_path: Path, dialect: str, body: dict[str, object], field: str
) -> None:
    """A missing field is broker_malformed naming the field and the dialect."""
    fake = FakeBroker([reply(201 if dialect == "livekit" else 200, body)])
    broker = make_broker(make_config(dialect, tmp_path), client=fake.client(), secret=env_secret())
    error = await fail(broker)
    assert error.reason == FailureReason.BROKER_MALFORMED
    assert dialect in str(error) and repr(field) in str(error)


async def test_token_that_is_not_a_jwt_is_malformed(tmp_path: Path) -> None:
    """A token that does not decode is broker_malformed, and the token is not echoed."""
    fake = FakeBroker([reply(200, lyzr_ok() | {"userToken": "not-a-jwt-SECRETISH"})])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_MALFORMED and "SECRETISH" not in str(error)


async def test_oshara_success_false_is_rejected_with_its_message(tmp_path: Path) -> None:
    """Oshara's ``success: false`` is broker_rejected with the message."""
    fake = FakeBroker([reply(200, {"success": False, "message": "agent disabled"})])
    broker = make_broker(make_config("oshara", tmp_path), client=fake.client(), secret=env_secret())
    error = await fail(broker)
    assert error.reason == FailureReason.BROKER_REJECTED and "agent disabled" in str(error)


async def test_insecure_livekit_url_from_the_broker_is_refused(tmp_path: Path) -> None:
    """A grant pointing at plain ws:// on a remote host is refused (the token would travel in clear)."""
    fake = FakeBroker([reply(200, lyzr_ok(livekitUrl="ws://lk.example.com"))])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_MALFORMED and "wss://" in str(error)


@pytest.mark.parametrize(
    ("nbf", "exp", "words"),
    [(3600.0, 7200.0, "only becomes valid"), (-7200.0, -3600.0, "expired")],
)
async def test_a_token_that_looks_wrong_by_the_local_clock_is_still_tried(
    tmp_path: Path, nbf: float, exp: float, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The kiosk never refuses a grant on its own clock: the problem is noted and logged, the server judges."""
    now = time.time()
    fake = FakeBroker([reply(200, lyzr_ok() | {"userToken": token(nbf=now + nbf, exp=now + exp)})])
    async with asyncio.timeout(5):
        grant = await lyzr(fake, tmp_path).start()
    assert grant.local_clock_problem is not None and words in grant.local_clock_problem
    assert "trying it anyway" in caplog.text


async def test_a_token_for_another_room_than_the_broker_named_is_a_grant_failure(tmp_path: Path) -> None:
    """Joining it would wait for an agent that never comes: refused before connecting, naming both rooms."""
    fake = FakeBroker([reply(200, lyzr_ok() | {"userToken": token(room="someone-elses-room")})])
    error = await fail(lyzr(fake, tmp_path))
    assert error.reason == FailureReason.BROKER_MALFORMED
    assert "someone-elses-room" in str(error) and "room-1" in str(error)


async def test_unreadable_key_is_a_secret_error_without_a_request(tmp_path: Path) -> None:
    """A missing key is a SecretError naming its source; nothing is sent."""
    fake = FakeBroker([reply(200, lyzr_ok())])
    broker = lyzr(fake, tmp_path, SecretSource(kind="env", name="TEST_KEY", environ={}))
    async with asyncio.timeout(5):
        with pytest.raises(SecretError) as caught:
            await broker.start()
    assert "TEST_KEY" in str(caught.value)
    assert fake.requests == []


async def test_no_budget_left_is_a_timeout(tmp_path: Path) -> None:
    """A deadline already past fails as broker_timeout without a request."""
    fake = FakeBroker([reply(200, lyzr_ok())])
    async with asyncio.timeout(5):
        with pytest.raises(BrokerError) as caught:
            await lyzr(fake, tmp_path).start(deadline=time.monotonic() - 1)
    assert caught.value.reason == FailureReason.BROKER_TIMEOUT
    assert fake.requests == []


def test_retries_are_logged_in_words(caplog: pytest.LogCaptureFixture) -> None:
    """A scheduled retry logs a sentence with the cause and the wait, not a bare ``stamina.retry_scheduled``."""
    import stamina.instrumentation

    from kiosk.broker.http import log_retry

    assert log_retry in stamina.instrumentation.get_on_retry_hooks()
    details = stamina.instrumentation.RetryDetails(
        name="start", args=(), kwargs={}, retry_num=2, wait_for=0.42, waited_so_far=0.3, caused_by=OSError("refused")
    )
    with caplog.at_level("WARNING", logger="kiosk.broker.http"):
        log_retry(details)
    assert caplog.messages == ["broker request failed (refused); retry 2 in 0.4 s (0.3 s spent retrying so far)"]
