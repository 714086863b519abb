"""LiveKit's agent worker protocol at ``/agent``: workers register, are offered jobs, and get them with a token.

A ``livekit-agents`` worker connects with a token that grants ``agent`` (signed with the server's API key and
secret) and sends ``WorkerMessage`` protobufs; the server answers with ``ServerMessage`` (``livekit.agent`` in
livekit-protocol). The exchange, as livekit-server runs it (``pkg/agent/worker.go``, ``pkg/service/agentservice.go``)::

    worker: register{type, agent_name, version, allowed_permissions}    server: register{worker_id, server_info}
    server: availability{job}                                           worker: availability{job_id, available, ...}
    server: assignment{job, token}      (token: kind agent, the identity/name/attributes the worker asked for)
    worker: update_job{job_id, status}   update_worker{status, load}   ping{timestamp} -> pong{last_timestamp, ...}
    server: termination{job_id}         (when the job's session ends)

A job goes to a worker registered under the job's agent name; failing that, to one registered without a name (the
automatic dispatch of LiveKit). Among those, available workers are asked in order of load until one accepts.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent, models

from kiosk_sandbox.ids import new_sid
from kiosk_sandbox.signaling import Unauthorized, bearer_claims

logger = logging.getLogger(__name__)

REGISTER_TIMEOUT_S = 10.0
ASSIGN_TIMEOUT_S = 10.0
AGENT_TOKEN_TTL = datetime.timedelta(hours=1)
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
_ENDED = (agent.JobStatus.JS_SUCCESS, agent.JobStatus.JS_FAILED)


@dataclass
class Worker:
    """One registered worker and the jobs it runs."""

    id: str
    agent_name: str
    job_type: agent.JobType
    version: str
    permissions: models.ParticipantPermission
    ws: web.WebSocketResponse
    status: agent.WorkerStatus = agent.WorkerStatus.WS_AVAILABLE
    load: float = 0.0
    jobs: dict[str, agent.Job] = field(default_factory=dict)
    offers: dict[str, asyncio.Future[agent.AvailabilityResponse]] = field(default_factory=dict)

    async def send(self, message: agent.ServerMessage) -> bool:
        """Send one message; False if the socket is gone."""
        if self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(message.SerializeToString())
        except ConnectionError:
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        """The worker as ``GET /sandbox/workers`` shows it."""
        return {
            "id": self.id,
            "agent_name": self.agent_name,
            "version": self.version,
            "status": agent.WorkerStatus.Name(self.status),
            "load": self.load,
            "jobs": sorted(self.jobs),
        }


class WorkerPool:
    """Registered agent workers, and the dispatch of jobs to them."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        server_info: models.ServerInfo,
        on_job: Callable[[agent.Job], None] | None = None,
    ) -> None:
        """Accept workers whose token is signed with ``api_key``/``api_secret``; ``on_job`` hears job changes."""
        self._api_key = api_key
        self._api_secret = api_secret
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._server_info = server_info
        self._on_job = on_job
        self.workers: dict[str, Worker] = {}

    def add_routes(self, app: web.Application) -> None:
        """Register ``/agent`` (the worker socket) and ``/sandbox/workers`` (who is registered) on ``app``."""
        app.router.add_get("/agent", self.agent_socket)
        app.router.add_get("/sandbox/workers", self._list)

    async def agent_socket(self, request: web.Request) -> web.StreamResponse:
        """Serve one worker from registration until its socket closes."""
        try:
            claims = bearer_claims(self._verifier, request)
            if claims.video is None or not claims.video.agent:
                raise Unauthorized("worker token does not grant agent")
        except Unauthorized as exc:
            logger.info("agent worker refused: %s", exc)
            return web.Response(status=401, text=str(exc))
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        worker = await self._register(ws)
        if worker is None:
            await ws.close()
            return ws
        self.workers[worker.id] = worker
        logger.info(
            "agent worker %s registered (agent name %r, version %s)", worker.id, worker.agent_name, worker.version
        )
        try:
            async for frame in ws:
                if frame.type == WSMsgType.BINARY:
                    await self._handle(worker, agent.WorkerMessage.FromString(frame.data))
        except DecodeError as exc:
            logger.warning("agent worker %s sent an unparsable message: %s", worker.id, exc)
        finally:
            del self.workers[worker.id]
            for offer in worker.offers.values():
                offer.cancel()
            logger.info("agent worker %s left", worker.id)
        return ws

    async def _register(self, ws: web.WebSocketResponse) -> Worker | None:
        try:
            async with asyncio.timeout(REGISTER_TIMEOUT_S):
                frame = await ws.receive()
            message = agent.WorkerMessage.FromString(frame.data) if frame.type == WSMsgType.BINARY else None
        except (TimeoutError, DecodeError) as exc:
            logger.warning("agent worker did not register: %r", exc)
            return None
        if message is None or message.WhichOneof("message") != "register":
            logger.warning("agent worker sent something other than register first; closing")
            return None
        request = message.register
        permissions = models.ParticipantPermission()
        if request.HasField("allowed_permissions"):
            permissions.CopyFrom(request.allowed_permissions)
        else:
            permissions = models.ParticipantPermission(
                can_subscribe=True, can_publish=True, can_publish_data=True, can_update_metadata=True
            )
        worker = Worker(
            id=new_sid("AW"),
            agent_name=request.agent_name,
            job_type=request.type,
            version=request.version,
            permissions=permissions,
            ws=ws,
        )
        reply = agent.RegisterWorkerResponse(worker_id=worker.id, server_info=self._server_info)
        return worker if await worker.send(agent.ServerMessage(register=reply)) else None

    async def _handle(self, worker: Worker, message: agent.WorkerMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "availability":
            offer = worker.offers.pop(message.availability.job_id, None)
            if offer is not None and not offer.done():
                offer.set_result(message.availability)
        elif kind == "update_job":
            self._update_job(worker, message.update_job)
        elif kind == "update_worker":
            if message.update_worker.HasField("status"):
                worker.status = message.update_worker.status
            worker.load = message.update_worker.load
        elif kind == "ping":
            pong = agent.WorkerPong(last_timestamp=message.ping.timestamp, timestamp=int(time.time() * 1000))
            await worker.send(agent.ServerMessage(pong=pong))
        else:
            logger.debug("ignoring %s from agent worker %s", kind, worker.id)

    def _update_job(self, worker: Worker, update: agent.UpdateJobStatus) -> None:
        job = worker.jobs.get(update.job_id)
        if job is None:
            logger.debug("agent worker %s updated unknown job %s", worker.id, update.job_id)
            return
        job.state.status = update.status
        job.state.error = update.error
        job.state.updated_at = time.time_ns()
        if update.status in _ENDED:
            job.state.ended_at = job.state.updated_at
            del worker.jobs[update.job_id]
            logger.info("job %s ended: %s %s", job.id, agent.JobStatus.Name(update.status), update.error)
        self._notify(job)

    def candidates(self, agent_name: str) -> list[Worker]:
        """Room workers that may take a job for ``agent_name``, least loaded first."""
        room_workers = [w for w in self.workers.values() if w.job_type == agent.JobType.JT_ROOM]
        named = [w for w in room_workers if w.agent_name == agent_name]
        chosen = named or [w for w in room_workers if not w.agent_name]
        available = [w for w in chosen if w.status == agent.WorkerStatus.WS_AVAILABLE]
        return sorted(available, key=lambda w: w.load)

    async def dispatch(self, *, room: models.Room, agent_name: str, metadata: str = "") -> agent.Job | None:
        """Offer a room job for ``agent_name`` to the workers until one accepts; return it as assigned, or None."""
        job = agent.Job(
            id=new_sid("AJ"),
            dispatch_id=new_sid("AD"),
            type=agent.JobType.JT_ROOM,
            room=room,
            agent_name=agent_name,
            metadata=metadata,
        )
        workers = self.candidates(agent_name)
        if not workers:
            logger.warning(
                "no agent worker for agent name %r is registered: room %s gets no agent (start a worker with "
                "agent_name=%r against this sandbox)",
                agent_name,
                room.name,
                agent_name,
            )
        for worker in workers:
            if await self._assign(worker, job):
                return job
        return None

    async def _assign(self, worker: Worker, job: agent.Job) -> bool:
        now = time.time_ns()
        job.state.CopyFrom(
            agent.JobState(status=agent.JobStatus.JS_RUNNING, worker_id=worker.id, started_at=now, updated_at=now)
        )
        offer: asyncio.Future[agent.AvailabilityResponse] = asyncio.get_running_loop().create_future()
        worker.offers[job.id] = offer
        if not await worker.send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job))):
            worker.offers.pop(job.id, None)
            return False
        try:
            async with asyncio.timeout(ASSIGN_TIMEOUT_S):
                answer = await offer
        except (TimeoutError, asyncio.CancelledError):
            worker.offers.pop(job.id, None)
            logger.warning("agent worker %s did not answer the offer of job %s", worker.id, job.id)
            return False
        if not answer.available:
            logger.info("agent worker %s declined job %s", worker.id, job.id)
            return False
        job.state.participant_identity = answer.participant_identity
        token = self._agent_token(worker, job, answer)
        worker.jobs[job.id] = job
        if not await worker.send(agent.ServerMessage(assignment=agent.JobAssignment(job=job, token=token))):
            del worker.jobs[job.id]
            return False
        logger.info("job %s for room %s assigned to agent worker %s", job.id, job.room.name, worker.id)
        self._notify(job)
        return True

    def _agent_token(self, worker: Worker, job: agent.Job, answer: agent.AvailabilityResponse) -> str:
        """The agent participant's token, as livekit-server's ``BuildAgentToken`` makes it."""
        attributes = dict(answer.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = worker.agent_name
        allowed = worker.permissions
        grants = api.VideoGrants(
            room_join=True,
            room=job.room.name,
            agent=True,
            can_subscribe=allowed.can_subscribe,
            can_publish=allowed.can_publish,
            can_publish_data=allowed.can_publish_data,
            can_update_own_metadata=allowed.can_update_metadata,
            hidden=allowed.hidden,
        )
        return (
            api.AccessToken(self._api_key, self._api_secret)
            .with_identity(answer.participant_identity)
            .with_name(answer.participant_name)
            .with_metadata(answer.participant_metadata)
            .with_attributes(attributes)
            .with_kind("agent")
            .with_ttl(AGENT_TOKEN_TTL)
            .with_grants(grants)
            .to_jwt()
        )

    async def terminate(self, room_name: str) -> None:
        """Tell the workers to end their jobs in ``room_name`` (its session ended)."""
        for worker in list(self.workers.values()):
            for job in [j for j in worker.jobs.values() if j.room.name == room_name]:
                await worker.send(agent.ServerMessage(termination=agent.JobTermination(job_id=job.id)))

    def _notify(self, job: agent.Job) -> None:
        if self._on_job is not None:
            self._on_job(job)

    async def close(self) -> None:
        """Close every worker's socket."""
        await asyncio.gather(*(w.ws.close() for w in list(self.workers.values())))

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"workers": [w.to_json() for w in self.workers.values()]})
