"""Every dialect against the sandbox's broker over real HTTP: start, overrides as received, end; crash recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from livekit import rtc

from kiosk.broker import Broker, ConnectionDetails, SessionKeeper, SessionLedger, make_broker
from kiosk.errors import BrokerError
from kiosk.reasons import FailureReason
from kiosk.secret import SecretSource
from kiosk_sandbox.resume import DEFAULT_DEPARTURE_TIMEOUT_S
from kiosk_sandbox.sessions import REJOIN_GRACE_S
from tests.fixtures.broker import SANDBOX_AGENT as AGENT
from tests.fixtures.broker import env_secret, sandbox_config
from tests.fixtures.sandbox import SandboxHandle


def sandbox_secret(sandbox: SandboxHandle, dialect: str) -> SecretSource:
    """The sandbox's broker key, or its LiveKit secret for dialect ``self``."""
    return env_secret(sandbox.livekit_api_secret if dialect == "self" else sandbox.api_key)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """One HTTP client, as the daemon keeps one."""
    async with httpx.AsyncClient(timeout=5) as shared:
        yield shared


# A room whose last human left ends after the sandbox's rejoin grace (3 s) when its leave arrived, or after the
# departure timeout (20 s, as livekit-server keeps a participant whose signal vanished) when the SDK's close lost it.
LEFT_ROOM_ENDS_S = REJOIN_GRACE_S + DEFAULT_DEPARTURE_TIMEOUT_S + 7


async def join_and_leave(grant: ConnectionDetails) -> None:
    """Join the granted room with the official SDK, then leave it."""
    room = rtc.Room()
    async with asyncio.timeout(15):
        await room.connect(grant.server_url, grant.token.get_secret_value(), rtc.RoomOptions(auto_subscribe=False))
        await room.disconnect()


def broker_for(sandbox: SandboxHandle, dialect: str, tmp_path: Path, client: httpx.AsyncClient, **kw: Any) -> Broker:
    """A broker of ``dialect`` talking to the sandbox."""
    return make_broker(
        sandbox_config(sandbox, dialect, tmp_path, **kw), client=client, secret=sandbox_secret(sandbox, dialect)
    )


async def test_lyzr_against_the_sandbox(sandbox: SandboxHandle, tmp_path: Path, client: httpx.AsyncClient) -> None:
    """Lyzr: agentConfig reaches the broker; the explicit end call ends the session there."""
    broker = broker_for(sandbox, "lyzr", tmp_path, client, overrides={"prompt": "be brief"})
    async with asyncio.timeout(10):
        grant = await broker.start()
        record = await asyncio.to_thread(sandbox.session, grant.room)
        assert (record["dialect"], record["identity"], record["agent_name"]) == ("lyzr", "kiosk-t1", AGENT)
        assert record["overrides"] == {"agentConfig": {"prompt": "be brief"}}
        assert record["ended_at"] is None
        await broker.end(grant)
        record = await sandbox.wait_session(grant.room, lambda r: r["ended_at"] is not None)
    assert record["end_reason"] == "broker_end"


async def test_oshara_against_the_sandbox(sandbox: SandboxHandle, tmp_path: Path, client: httpx.AsyncClient) -> None:
    """Oshara: top-level overrides reach the broker; leaving the room ends the session."""
    overrides = {"language": "de", "greeting": "Hallo", "system_prompt": "kurz"}
    broker = broker_for(sandbox, "oshara", tmp_path, client, overrides=overrides)
    async with asyncio.timeout(20):
        grant = await broker.start()
        record = await asyncio.to_thread(sandbox.session, grant.room)
        assert record["dialect"] == "oshara" and record["overrides"] == overrides
        await join_and_leave(grant)
        await broker.end(grant)
    record = await sandbox.wait_session(grant.room, lambda r: r["ended_at"] is not None, within=LEFT_ROOM_ENDS_S)
    assert record["end_reason"] == "last_participant_left"


async def test_livekit_endpoint_against_the_sandbox(
    sandbox: SandboxHandle, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """LiveKit endpoint: room_config (agent dispatch + overrides) and attributes reach the endpoint."""
    overrides = {"attributes": {"site": "lobby"}, "room_config": {"empty_timeout": 30}}
    broker = broker_for(sandbox, "livekit", tmp_path, client, overrides=overrides)
    async with asyncio.timeout(20):
        grant = await broker.start()
        record = await asyncio.to_thread(sandbox.session, grant.room)
        assert (record["dialect"], record["identity"], record["agent_name"]) == ("livekit", "kiosk-t1", AGENT)
        assert record["overrides"] == {
            "room_config": {"agents": [{"agent_name": AGENT}], "empty_timeout": 30},
            "attributes": {"site": "lobby"},
        }
        await join_and_leave(grant)
        await broker.end(grant)
    record = await sandbox.wait_session(grant.room, lambda r: r["ended_at"] is not None, within=LEFT_ROOM_ENDS_S)
    assert record["end_reason"] == "last_participant_left"


async def test_self_minted_against_the_sandbox(
    sandbox: SandboxHandle, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """Self: the sandbox's room server accepts the token, dispatches the named agent with the attributes."""
    broker = broker_for(sandbox, "self", tmp_path, client, overrides={"attributes": {"site": "lobby"}})
    async with asyncio.timeout(20):
        grant = await broker.start()
        await join_and_leave(grant)
        await broker.end(grant)
    record = await sandbox.wait_session(grant.room, lambda r: r["ended_at"] is not None, within=LEFT_ROOM_ENDS_S)
    assert (record["dialect"], record["identity"], record["agent_name"]) == ("self", "kiosk-t1", AGENT)
    assert record["overrides"]["attributes"] == {"site": "lobby"}
    assert record["overrides"]["room_config"]["agents"] == [{"agentName": AGENT}]


async def test_wrong_key_is_unauthorized_at_the_sandbox(
    sandbox: SandboxHandle, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """The sandbox's 401 is named broker_unauthorized."""
    config = sandbox_config(sandbox, "lyzr", tmp_path)
    broker = make_broker(config, client=client, secret=env_secret("sk_wrong_key_123456789012"))
    async with asyncio.timeout(10):
        with pytest.raises(BrokerError) as caught:
            await broker.start()
    assert caught.value.reason == FailureReason.BROKER_UNAUTHORIZED


CRASHER = textwrap.dedent(
    """
    import asyncio, sys, httpx
    from kiosk.broker import SessionKeeper, SessionLedger, make_broker
    from kiosk.config import KioskConfig

    async def main() -> None:
        config = KioskConfig.model_validate_json(sys.argv[1])
        async with httpx.AsyncClient(timeout=5) as client:
            broker = make_broker(config, client=client)
            keeper = SessionKeeper(broker=broker, ledger=SessionLedger(config.daemon.state_dir),
                                   end_timeout_s=2, end_retry_max_s=2)
            started = await keeper.start()
            print("STARTED", started.grant.room, flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_crash_between_start_and_end_is_recovered(
    sandbox: SandboxHandle, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """A process SIGKILLed mid-session leaves a record; the next start's recover() ends the orphan at the broker."""
    config = sandbox_config(sandbox, "lyzr", tmp_path)
    env = {**os.environ, "TEST_KEY": sandbox.api_key}
    process = await asyncio.wait_for(
        asyncio.create_subprocess_exec(
            sys.executable, "-c", CRASHER, config.model_dump_json(), stdout=subprocess.PIPE, env=env
        ),
        10,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(15):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("STARTED "), line
        room = line.split()[1]
    finally:
        process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            await process.wait()
    assert (await asyncio.wait_for(asyncio.to_thread(sandbox.session, room), 10))["ended_at"] is None
    ledger = SessionLedger(tmp_path)
    assert [r.room for r in ledger.pending()] == [room]
    broker = make_broker(config, client=client, secret=sandbox_secret(sandbox, "lyzr"))
    keeper = SessionKeeper(broker=broker, ledger=ledger, end_timeout_s=5, end_retry_max_s=5)
    async with asyncio.timeout(15):
        assert await keeper.recover() == 1
        record = await sandbox.wait_session(room, lambda r: r["ended_at"] is not None)
    assert record["end_reason"] == "broker_end"
    assert ledger.pending() == []
    await asyncio.wait_for(keeper.aclose(), 5)
