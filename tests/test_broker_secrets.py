"""No API key and no token in any log line, exception text, repr or doctor output, failing or succeeding."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stamina

from kiosk.broker import SessionKeeper, SessionLedger, make_broker
from kiosk.errors import BrokerError
from tests.fixtures.broker import (
    API_KEY,
    FakeBroker,
    env_secret,
    keeper_session,
    lyzr_ok,
    make_config,
    reply,
    sandbox_config,
    token,
    write_sandbox_config,
)
from tests.fixtures.sandbox import SandboxHandle


@pytest.fixture(autouse=True)
def two_attempts() -> Iterator[None]:
    """Retries happen (and log), without waiting."""
    with stamina.set_testing(True, attempts=2):
        yield


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as the journal would show it, tracebacks included."""
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


async def test_logs_and_errors_hold_no_key_and_no_token(
    sandbox: SandboxHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A succeeding session and several failing ones, at DEBUG: the key and tokens appear nowhere."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with httpx.AsyncClient(timeout=5) as client:
        config = sandbox_config(sandbox, "lyzr", tmp_path)
        broker = make_broker(config, client=client, secret=env_secret(sandbox.api_key))
        keeper = SessionKeeper(broker=broker, ledger=SessionLedger(tmp_path), end_timeout_s=3, end_retry_max_s=3)
        async with asyncio.timeout(15), keeper_session(keeper) as grant:
            tokens = [grant.token.get_secret_value()]
            seen += [repr(grant), str(grant), repr(broker), repr(keeper), repr(grant.ticket)]
            seen += [path.read_text() for path in (tmp_path / "sessions").glob("*.json")]
        wrong = make_broker(config, client=client, secret=env_secret("sk_wrong_key_0123456789abcdef"))
        async with asyncio.timeout(10):
            with pytest.raises(BrokerError) as caught:
                await SessionKeeper(
                    broker=wrong, ledger=SessionLedger(tmp_path), end_timeout_s=3, end_retry_max_s=3
                ).start()
        seen += [str(caught.value), repr(caught.value)]
    leaky_token = token()
    tokens.append(leaky_token)
    failures: list[httpx.Response | Exception] = [
        reply(400, {"message": f"bad agent; key={API_KEY} token {leaky_token}"}),
        reply(500, {"detail": f"upstream said x-api-key: {API_KEY}"}),
        reply(200, lyzr_ok(userToken=token(room="another-room"))),
        httpx.ConnectError(f"proxy refused {API_KEY}"),
    ]
    for answer in failures:
        fake = FakeBroker([answer])
        mocked = make_broker(make_config("lyzr", tmp_path), client=fake.client(), secret=env_secret())
        keeper = SessionKeeper(broker=mocked, ledger=SessionLedger(tmp_path), end_timeout_s=1, end_retry_max_s=1)
        async with asyncio.timeout(10):
            with pytest.raises(BrokerError) as caught:
                await keeper.start()
        seen += [str(caught.value), repr(caught.value)]
        await asyncio.wait_for(keeper.aclose(), 5)
    text = everything_logged(caplog) + "\n".join(seen)
    logged = everything_logged(caplog)
    assert "granted room" in logged and grant.room in logged and "HTTP Request" in logged  # the logs say things
    assert "refused the API key" in text and "another-room" in text
    for secret in [sandbox.api_key, "sk_wrong_key_0123456789abcdef", API_KEY, *tokens]:
        assert secret not in text
    assert "eyJ" not in text


def test_doctor_output_holds_no_key_and_no_token(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """``kiosk doctor -v`` (debug logs on stderr), passing and failing, prints neither key nor token."""
    config = write_sandbox_config(sandbox, "lyzr", tmp_path)
    outputs = []
    for key in (sandbox.api_key, "sk_wrong_key_0123456789abcdef"):
        env = {**os.environ, "DOCTOR_KEY": key}
        command = [sys.executable, "-m", "kiosk", "doctor", "--broker", "-v", "--config", str(config)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
        outputs.append(result.stdout + result.stderr)
        assert key not in outputs[-1]
    assert "doctor: all checks passed" in outputs[0] and "DEBUG" in outputs[0]
    assert "broker_unauthorized" in outputs[1]
    assert all("eyJ" not in output for output in outputs)


def test_credential_file_follows_the_units_load_credential(tmp_path: Path) -> None:
    """Outside systemd a credential is read from the file the installed unit's LoadCredential= names."""
    from kiosk.secret import credential_file, credential_map

    unit = tmp_path / "kiosk.service"
    unit.write_text("[Service]\nLoadCredential=broker-api-key:/srv/keys/broker\nLoadCredential=other:/x\n")
    assert credential_map(unit.read_text()) == {"broker-api-key": Path("/srv/keys/broker"), "other": Path("/x")}
    assert credential_file("broker-api-key", units=(tmp_path / "missing.service", unit)) == Path("/srv/keys/broker")
    assert credential_file("nope", units=(unit,)) == Path("/etc/kiosk/nope")
