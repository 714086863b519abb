"""What each dialect sends and accepts, to the letter of the vendor guides (over ``httpx.MockTransport``)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina
from livekit import api

from kiosk.broker import make_broker
from kiosk.broker.http import make_client
from kiosk.errors import ConfigError
from kiosk.secret import SecretSource
from tests.fixtures.broker import API_KEY, LK_SECRET, FakeBroker, env_secret, lyzr_ok, make_config, reply, token


@pytest.fixture(autouse=True)
def no_retry_waits() -> Iterator[None]:
    """No backoff waits in these tests."""
    with stamina.set_testing(True, attempts=2):
        yield


async def test_lyzr_start_and_end_follow_the_guide(tmp_path: Path) -> None:
    """Lyzr: x-api-key, /v1/sessions/start {userIdentity, agentId, agentConfig}, then /v1/sessions/end {roomName}."""
    fake = FakeBroker([reply(200, lyzr_ok("lyzr-room")), reply(200, {"success": True})])
    config = make_config("lyzr", tmp_path, overrides={"prompt": "be brief", "engine": {"tts": "x"}})
    broker = make_broker(config, client=fake.client(), secret=env_secret())
    async with asyncio.timeout(5):
        grant = await broker.start()
        await broker.end(grant)
    start, end = fake.requests
    assert (start.method, str(start.url)) == ("POST", "https://broker.test/v1/sessions/start")
    assert start.headers["x-api-key"] == API_KEY and start.headers["content-type"] == "application/json"
    assert fake.bodies()[0] == {
        "userIdentity": "kiosk-t1",
        "agentId": "agent-1",
        "agentConfig": {"prompt": "be brief", "engine": {"tts": "x"}},
    }
    assert str(end.url) == "https://broker.test/v1/sessions/end"
    assert fake.bodies()[1] == {"roomName": "lyzr-room"}
    assert (grant.dialect, grant.room, grant.server_url) == ("lyzr", "lyzr-room", "wss://lk.test")
    assert grant.token.get_secret_value().startswith("eyJ")


async def test_lyzr_end_of_an_unknown_room_counts_as_ended(tmp_path: Path) -> None:
    """A 404 from Lyzr's end means the session is already gone."""
    fake = FakeBroker([reply(200, lyzr_ok()), reply(404, {"message": "no session"})])
    broker = make_broker(make_config("lyzr", tmp_path), client=fake.client(), secret=env_secret())
    async with asyncio.timeout(5):
        await broker.end(await broker.start())


async def test_oshara_sends_overrides_at_top_level_and_reads_the_envelope(tmp_path: Path) -> None:
    """Oshara: /api/agents/agent-session/ {agent, language, ...}; answer {success, message, data{...}}."""
    data = {"token": token(room="osh", identity="visitor-1"), "livekit_url": "wss://lk.test", "room_name": "osh"}
    fake = FakeBroker([reply(200, {"success": True, "message": "Request successful", "data": data})])
    overrides = {"language": "de", "greeting": "Hallo", "system_prompt": "p", "reference_audio_url": "https://v/a.wav"}
    broker = make_broker(
        make_config("oshara", tmp_path, overrides=overrides), client=fake.client(), secret=env_secret()
    )
    async with asyncio.timeout(5):
        grant = await broker.start()
        await broker.end(grant)
    assert str(fake.requests[0].url) == "https://broker.test/api/agents/agent-session/"
    assert fake.requests[0].headers["x-api-key"] == API_KEY
    assert fake.bodies() == [{"agent": "agent-1", **overrides}]
    assert (grant.room, grant.identity) == ("osh", "visitor-1")


def test_oshara_refuses_unknown_overrides_by_name(tmp_path: Path) -> None:
    """An override Oshara does not know is a config error naming it."""
    config = make_config("oshara", tmp_path, overrides={"language": "en", "voice_speed": 2, "temperature": 1})
    with pytest.raises(ConfigError, match=r"temperature, voice_speed") as caught:
        make_broker(config, client=make_client(config.broker), secret=env_secret())
    assert "language" in str(caught.value)


async def test_livekit_endpoint_request_shape(tmp_path: Path) -> None:
    """LiveKit endpoint: exactly broker.url, snake_case fields, agent dispatch in room_config, 201 accepted."""
    seen: list[str] = []

    def answer(request: object) -> object:
        room = fake.bodies()[-1]["room_name"]
        seen.append(room)
        return reply(201, {"server_url": "wss://lk.test", "participant_token": token(room=room)})

    fake = FakeBroker([answer])  # type: ignore[list-item]
    overrides = {"attributes": {"site": "lobby"}, "metadata": "m", "room_config": {"empty_timeout": 30}}
    config = make_config("livekit", tmp_path, overrides=overrides, room_prefix="lobby")
    broker = make_broker(config, client=fake.client(), secret=env_secret())
    async with asyncio.timeout(5):
        grant = await broker.start()
        await broker.end(grant)
    assert str(fake.requests[0].url) == "https://broker.test/api/token"
    body = fake.bodies()[0]
    assert body == {
        "room_name": seen[0],
        "participant_identity": "kiosk-t1",
        "participant_name": "Test Kiosk",
        "participant_metadata": "m",
        "participant_attributes": {"site": "lobby"},
        "room_config": {"agents": [{"agent_name": "front-desk"}], "empty_timeout": 30},
    }
    assert re.fullmatch(r"lobby-kiosk-t1-[0-9a-f]{8}", grant.room)
    assert len(fake.requests) == 1  # no end call


def test_livekit_refuses_unknown_overrides_by_name(tmp_path: Path) -> None:
    """Vendor-only overrides are a config error for the LiveKit dialects."""
    for dialect in ("livekit", "self"):
        config = make_config(dialect, tmp_path, overrides={"greeting": "hi"})
        with pytest.raises(ConfigError, match="greeting"):
            make_broker(config, client=make_client(config.broker), secret=env_secret(LK_SECRET))


async def test_self_mints_a_verifiable_token_with_the_agent_dispatch(tmp_path: Path) -> None:
    """Self: a token signed with the secret, for a fresh room, identity, name, ttl and agent dispatch."""
    config = make_config("self", tmp_path, token_ttl_s=120, overrides={"attributes": {"site": "lobby"}})
    broker = make_broker(config, client=make_client(config.broker), secret=env_secret(LK_SECRET))
    async with asyncio.timeout(5):
        grant = await broker.start()
        await broker.end(grant)
    claims = api.TokenVerifier("APItest", LK_SECRET).verify(grant.token.get_secret_value())
    assert claims.video is not None and claims.video.room == grant.room and claims.video.room_join
    assert (claims.identity, claims.name, claims.attributes) == ("kiosk-t1", "Test Kiosk", {"site": "lobby"})
    assert claims.room_config is not None and claims.room_config.agents[0].agent_name == "front-desk"
    assert 110 <= grant.expires_in_s() <= 121
    assert grant.server_url == "wss://lk.test" and re.fullmatch(r"kiosk-kiosk-t1-[0-9a-f]{8}", grant.room)


@pytest.mark.parametrize(
    ("dialect", "key", "value"),
    [
        ("lyzr", "url", "http://broker.example.com"),
        ("livekit", "url", "http://10.0.0.5/api/token"),
        ("self", "livekit_url", "ws://livekit.example.com"),
    ],
)
def test_plain_http_to_a_remote_host_is_a_config_error(tmp_path: Path, dialect: str, key: str, value: str) -> None:
    """https:// (wss://) is required unless the host is loopback."""
    config = make_config(dialect, tmp_path, **{key: value})
    with pytest.raises(ConfigError, match=rf"broker\.{key}: .*not encrypted"):
        make_broker(config, client=make_client(config.broker), secret=env_secret())


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "localhost", "[::1]"])
def test_plain_http_on_loopback_is_allowed(tmp_path: Path, host: str) -> None:
    """Loopback brokers (the sandbox, a local proxy) may use http://."""
    config = make_config("lyzr", tmp_path, url=f"http://{host}:8080")
    assert make_broker(config, client=make_client(config.broker), secret=env_secret()).url.startswith("http://")  # type: ignore[union-attr]


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """A ca_file that cannot be loaded is named; there is no way to switch verification off."""
    config = make_config("lyzr", tmp_path, ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"broker\.ca_file"):
        make_client(config.broker)


async def test_key_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    """A rotated key file is used from the next request on, without a restart."""
    key_file = tmp_path / "key"
    key_file.write_text("sk_first_key_aaaaaaaaaaaa\n")
    fake = FakeBroker([reply(200, lyzr_ok())])
    config = make_config("lyzr", tmp_path)
    broker = make_broker(config, client=fake.client(), secret=SecretSource(kind="file", name=str(key_file)))
    async with asyncio.timeout(5):
        await broker.start()
        key_file.write_text("sk_second_key_bbbbbbbbbbbbbb\n")
        os.utime(key_file, ns=(1, 1))
        await broker.start()
    assert [r.headers["x-api-key"] for r in fake.requests] == [
        "sk_first_key_aaaaaaaaaaaa",
        "sk_second_key_bbbbbbbbbbbbbb",
    ]
