"""The sandbox's broker dialects and token checks, over plain HTTP and through the official SDK."""

from __future__ import annotations

import asyncio
import datetime

import httpx
import pytest
from livekit import api, rtc

from tests.fixtures.sandbox import SandboxHandle

DIALECT_PATHS = ["/v1/sessions/start", "/v1/sessions/end", "/api/agents/agent-session/", "/api/token"]


@pytest.mark.parametrize("path", DIALECT_PATHS)
@pytest.mark.parametrize("key", ["", "sk_wrong"])
async def test_wrong_or_missing_api_key_is_401(sandbox: SandboxHandle, path: str, key: str) -> None:
    """Every broker endpoint answers 401 with a JSON error when x-api-key is missing or wrong."""
    async with asyncio.timeout(5):
        response = await sandbox.post(path, {"agentId": "a", "agent": "a", "roomName": "r"}, api_key=key)
    assert response.status_code == 401
    assert "x-api-key" in response.json()["message"]


async def test_lyzr_start_returns_documented_fields(sandbox: SandboxHandle) -> None:
    """Lyzr's start answers userToken, livekitUrl and roomName, and records agentConfig as overrides."""
    body = {"userIdentity": "kiosk-lobby", "agentId": "agent-42", "agentConfig": {"prompt": "be brief"}}
    async with asyncio.timeout(5):
        response = await sandbox.post("/v1/sessions/start", body)
    assert response.status_code == 200
    data = response.json()
    assert data["livekitUrl"] == sandbox.ws_url
    claims = api.TokenVerifier(sandbox.livekit_api_key, sandbox.livekit_api_secret).verify(data["userToken"])
    assert claims.identity == "kiosk-lobby"
    assert claims.video is not None and claims.video.room == data["roomName"]
    record = await asyncio.to_thread(sandbox.session, data["roomName"])
    assert record["dialect"] == "lyzr"
    assert record["agent_name"] == "agent-42"
    assert record["overrides"] == {"agentConfig": {"prompt": "be brief"}}
    async with asyncio.timeout(5):
        ended = await sandbox.post("/v1/sessions/end", {"roomName": data["roomName"]})
    assert ended.status_code == 200
    record = await sandbox.wait_session(data["roomName"], lambda r: r["ended_at"] is not None)
    assert record["end_reason"] == "broker_end"


async def test_oshara_session_returns_documented_envelope(sandbox: SandboxHandle) -> None:
    """Oshara's agent-session answers {success, message, data{token, livekit_url, room_name}}."""
    body = {"agent": "agent_id", "language": "de", "greeting": "Hallo", "system_prompt": "p"}
    async with asyncio.timeout(5):
        response = await sandbox.post("/api/agents/agent-session/", body)
    payload = response.json()
    assert response.status_code == 200
    assert payload["success"] is True and payload["message"] == "Request successful"
    assert set(payload["data"]) == {"token", "livekit_url", "room_name"}
    record = await asyncio.to_thread(sandbox.session, payload["data"]["room_name"])
    assert record["overrides"] == {"language": "de", "greeting": "Hallo", "system_prompt": "p"}


async def test_livekit_token_endpoint_returns_201(sandbox: SandboxHandle) -> None:
    """The standard token endpoint answers 201 {server_url, participant_token} and honours its fields."""
    body = {
        "room_name": "lobby-token-endpoint",
        "participant_identity": "kiosk-7",
        "participant_name": "Kiosk 7",
        "participant_attributes": {"site": "lobby"},
        "room_config": {"agents": [{"agent_name": "front-desk"}]},
    }
    async with asyncio.timeout(5):
        response = await sandbox.post("/api/token", body)
    assert response.status_code == 201
    payload = response.json()
    assert payload["server_url"] == sandbox.ws_url
    verifier = api.TokenVerifier(sandbox.livekit_api_key, sandbox.livekit_api_secret)
    claims = verifier.verify(payload["participant_token"])
    assert (claims.identity, claims.name, claims.attributes) == ("kiosk-7", "Kiosk 7", {"site": "lobby"})
    assert claims.room_config is not None and claims.room_config.agents[0].agent_name == "front-desk"
    record = await asyncio.to_thread(sandbox.session, "lobby-token-endpoint")
    assert record["dialect"] == "livekit" and record["agent_name"] == "front-desk"
    await sandbox.post("/v1/sessions/end", {"roomName": "lobby-token-endpoint"})


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/sessions/start", {"userIdentity": "x"}, "agentId"),
        ("/v1/sessions/start", {"agentId": "a", "agentConfig": "no"}, "agentConfig"),
        ("/v1/sessions/end", {}, "roomName"),
        ("/api/agents/agent-session/", {"language": "en"}, "agent"),
        ("/api/agents/agent-session/", {"agent": "a", "greeting": 5}, "greeting"),
        ("/api/token", {"room_config": {"agents": "nope"}}, "room_config"),
        ("/api/token", {"participant_attributes": {"a": 1}}, "participant_attributes"),
    ],
)
async def test_invalid_requests_name_the_field(sandbox: SandboxHandle, path: str, body: dict, field: str) -> None:
    """A malformed request is a 400 whose JSON names the offending field."""
    async with asyncio.timeout(5):
        response = await sandbox.post(path, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert field in response.json()["message"]


async def test_single_connection_path_is_404_and_validate_explains(sandbox: SandboxHandle) -> None:
    """``/rtc/v1`` is a 404 (the SDK falls back) and ``/rtc/validate`` gives the reason for a bad token."""
    async with httpx.AsyncClient(timeout=5) as client:
        v1 = await client.get(f"{sandbox.http_url}/rtc/v1")
        bad = await client.get(f"{sandbox.http_url}/rtc/validate", headers={"Authorization": "Bearer nonsense"})
        good_token = sandbox.mint_token("validator", "validate-room")
        good = await client.get(f"{sandbox.http_url}/rtc/validate", headers={"Authorization": f"Bearer {good_token}"})
    assert v1.status_code == 404
    assert bad.status_code == 401 and "invalid" in bad.text
    assert good.status_code == 200


def _token(sandbox: SandboxHandle, *, secret: str | None = None, ttl_s: float = 600) -> str:
    return (
        api.AccessToken(sandbox.livekit_api_key, secret or sandbox.livekit_api_secret)
        .with_identity("intruder")
        .with_ttl(datetime.timedelta(seconds=ttl_s))
        .with_grants(api.VideoGrants(room_join=True, room="guarded"))
        .to_jwt()
    )


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("expired", "expired"), ("wrong_secret", "signature"), ("garbage", "invalid")],
)
async def test_bad_token_is_a_connect_error_naming_the_reason(sandbox: SandboxHandle, kind: str, reason: str) -> None:
    """The SDK's ConnectError carries the 401 and the sandbox's reason."""
    token = {
        "expired": _token(sandbox, ttl_s=-600),
        "wrong_secret": _token(sandbox, secret="another-secret-entirely-0123456789"),
        "garbage": "not-a-jwt",
    }[kind]
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError) as caught:
        async with asyncio.timeout(10):
            await room.connect(sandbox.ws_url, token)
    assert "401" in str(caught.value)
    assert reason in str(caught.value)
