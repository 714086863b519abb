"""LiveKit's agent worker protocol at ``/agent``, spoken by a protocol-level client, and ``--agent none``."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from livekit import api, rtc
from livekit.protocol import agent, models

from kiosk_sandbox import Sandbox
from tests.fixtures.waiting import until

TIMEOUT_S = 10.0


@pytest.fixture
async def workers_sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A sandbox that dispatches sessions to registered workers."""
    async with Sandbox(host="127.0.0.1", port=0, state_dir=tmp_path, agent_mode="workers") as sb:
        yield sb


class ProtocolWorker:
    """A worker speaking the protocol by hand, as ``livekit-agents`` does (``worker.py``)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Wrap an open ``/agent`` socket."""
        self.ws = ws

    async def send(self, message: agent.WorkerMessage) -> None:
        """Send one worker message (bounded)."""
        async with asyncio.timeout(TIMEOUT_S):
            await self.ws.send_bytes(message.SerializeToString())

    async def receive(self) -> agent.ServerMessage:
        """The next server message (bounded)."""
        async with asyncio.timeout(TIMEOUT_S):
            frame = await self.ws.receive()
        assert frame.type == aiohttp.WSMsgType.BINARY, frame
        return agent.ServerMessage.FromString(frame.data)

    async def register(self, agent_name: str) -> agent.RegisterWorkerResponse:
        """Register as a room worker for ``agent_name``."""
        permissions = models.ParticipantPermission(can_publish=True, can_subscribe=True, can_publish_data=True)
        request = agent.RegisterWorkerRequest(
            type=agent.JobType.JT_ROOM, agent_name=agent_name, version="test", allowed_permissions=permissions
        )
        await self.send(agent.WorkerMessage(register=request))
        answer = await self.receive()
        assert answer.WhichOneof("message") == "register"
        return answer.register


def _worker_token(sb: Sandbox, *, agent_grant: bool = True) -> str:
    token = api.AccessToken(sb.livekit_api_key, sb.livekit_api_secret)
    return token.with_grants(api.VideoGrants(agent=agent_grant)).to_jwt()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the worker sockets."""
    async with aiohttp.ClientSession() as session:
        yield session


async def _connect(http: aiohttp.ClientSession, sb: Sandbox) -> ProtocolWorker:
    headers = {"Authorization": f"Bearer {_worker_token(sb)}"}
    async with asyncio.timeout(TIMEOUT_S):
        ws = await http.ws_connect(f"{sb.ws_url}/agent", headers=headers)
    return ProtocolWorker(ws)


async def _lyzr_session(sb: Sandbox, agent_id: str) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        response = await client.post(
            f"{sb.http_url}/v1/sessions/start",
            json={"agentId": agent_id, "userIdentity": "kiosk-1"},
            headers={"x-api-key": sb.api_key},
        )
    response.raise_for_status()
    body: dict[str, str] = response.json()
    return body


async def test_a_worker_registers_is_offered_the_session_and_gets_a_token(
    workers_sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    """Register, ping, take the offered job of a Lyzr session, and receive a token of kind agent for its room."""
    sb = workers_sandbox
    worker = await _connect(http, sb)
    registered = await worker.register("front-desk")
    assert registered.worker_id.startswith("AW_") and registered.server_info.version
    await worker.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1234)))
    assert (await worker.receive()).pong.last_timestamp == 1234

    session = await _lyzr_session(sb, "front-desk")
    offer = (await worker.receive()).availability
    assert offer.job.room.name == session["roomName"] and offer.job.room.sid.startswith("RM_")
    assert offer.job.agent_name == "front-desk" and offer.job.type == agent.JobType.JT_ROOM
    answer = agent.AvailabilityResponse(
        job_id=offer.job.id,
        available=True,
        participant_identity="agent-front",
        participant_name="Front desk",
        participant_attributes={"lk.agent.name": "front-desk"},
    )
    await worker.send(agent.WorkerMessage(availability=answer))
    assignment = (await worker.receive()).assignment
    assert assignment.job.id == offer.job.id
    claims = api.TokenVerifier(sb.livekit_api_key, sb.livekit_api_secret).verify(assignment.token)
    assert claims.identity == "agent-front" and claims.name == "Front desk" and claims.kind == "agent"
    assert claims.video is not None and claims.video.agent and claims.video.room == session["roomName"]
    assert claims.attributes == {"lk.agent.name": "front-desk", "lk.agent_name": "front-desk"}

    record = sb.session_manager.by_room(session["roomName"])
    assert record is not None and record.agent_job["participant_identity"] == "agent-front"
    await worker.send(agent.WorkerMessage(update_job=agent.UpdateJobStatus(job_id=offer.job.id, status=2)))
    await worker.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=5)))
    await worker.receive()
    assert record.agent_job["status"] == "JS_SUCCESS"


async def test_a_declined_job_goes_to_the_next_worker_and_unnamed_workers_take_the_rest(
    workers_sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    """A worker that declines is passed over; a name no worker registered falls to a worker registered unnamed."""
    sb = workers_sandbox
    first, second = await _connect(http, sb), await _connect(http, sb)
    await first.register("")
    await second.register("")
    await first.send(agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(load=0.1)))
    await second.send(agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(load=0.5)))
    await first.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1)))
    await second.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1)))
    await asyncio.gather(first.receive(), second.receive())
    await _lyzr_session(sb, "nobody-registered-this-name")
    offer = (await first.receive()).availability
    await first.send(agent.WorkerMessage(availability=agent.AvailabilityResponse(job_id=offer.job.id, available=False)))
    offer_again = (await second.receive()).availability
    assert offer_again.job.id == offer.job.id
    accept = agent.AvailabilityResponse(job_id=offer.job.id, available=True, participant_identity="agent-2")
    await second.send(agent.WorkerMessage(availability=accept))
    assert (await second.receive()).assignment.job.id == offer.job.id


async def test_worker_sockets_need_an_agent_grant(workers_sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    """A token without the agent grant is refused with 401 and a reason, as livekit-server does."""
    headers = {"Authorization": f"Bearer {_worker_token(workers_sandbox, agent_grant=False)}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with asyncio.timeout(TIMEOUT_S):
            await http.ws_connect(f"{workers_sandbox.ws_url}/agent", headers=headers)
    assert refused.value.status == 401


async def test_the_end_of_a_session_terminates_its_job(workers_sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    """When the broker ends the session, the worker is told to end the job of its room."""
    sb = workers_sandbox
    worker = await _connect(http, sb)
    await worker.register("desk")
    session = await _lyzr_session(sb, "desk")
    offer = (await worker.receive()).availability
    accept = agent.AvailabilityResponse(job_id=offer.job.id, available=True, participant_identity="agent-d")
    await worker.send(agent.WorkerMessage(availability=accept))
    await worker.receive()
    async with asyncio.timeout(TIMEOUT_S):
        await sb.session_manager.end(session["roomName"], "broker_end")
    assert (await worker.receive()).termination.job_id == offer.job.id


async def test_agent_none_sends_nobody_and_an_outside_agent_joins_by_itself(tmp_path: Path) -> None:
    """With ``--agent none`` a session's room stays empty until a participant with an agent token joins it."""
    async with Sandbox(host="127.0.0.1", port=0, state_dir=tmp_path, agent_mode="none") as sb:
        session = await _lyzr_session(sb, "outside")
        kiosk, outside = rtc.Room(), rtc.Room()
        token = (
            api.AccessToken(sb.livekit_api_key, sb.livekit_api_secret)
            .with_identity(f"outside-{secrets.token_hex(2)}")
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=session["roomName"], agent=True))
            .to_jwt()
        )
        async with asyncio.timeout(TIMEOUT_S):
            await kiosk.connect(session["livekitUrl"], session["userToken"])
            assert not kiosk.remote_participants
            await outside.connect(sb.ws_url, token)
            await until(lambda: kiosk.remote_participants, TIMEOUT_S, "the agent in the kiosk's room")
        (seen,) = kiosk.remote_participants.values()
        assert seen.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        record = sb.session_manager.by_room(session["roomName"])
        assert record is not None and record.humans_joined == 1 and not record.agent_job
        async with asyncio.timeout(5):
            await asyncio.gather(kiosk.disconnect(), outside.disconnect())
