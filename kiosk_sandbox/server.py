"""The whole sandbox on one port: room server, broker, session records, and the scripted agent.

Reconnects behave as on livekit-server (:mod:`kiosk_sandbox.resume`): a participant whose signal drops is kept for
a resume until the departure timeout; a resume that cannot work is refused with ``leave{STATE_MISMATCH, RECONNECT}``
so that the SDK rejoins; a rejoin replaces the kept participant without ending the session. Disconnect reasons:
``ROOM_DELETED`` (RoomService ``DeleteRoom``, broker end), ``SERVER_SHUTDOWN`` (:meth:`Sandbox.stop`),
``DUPLICATE_IDENTITY``, ``PARTICIPANT_REMOVED`` (RoomService ``RemoveParticipant``), ``CONNECTION_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import agent as agent_protocol
from livekit.protocol import models

from kiosk_sandbox.agent import ScriptedAgent
from kiosk_sandbox.agent_behaviours import AGENT_BEHAVIOURS, AgentBehaviour, behaviour_for
from kiosk_sandbox.broker import DEFAULT_AGENT_NAME, Broker
from kiosk_sandbox.resume import DEFAULT_DEPARTURE_TIMEOUT_S
from kiosk_sandbox.room_service import RoomService
from kiosk_sandbox.rooms import RoomRegistry
from kiosk_sandbox.sessions import REJOIN_GRACE_S, SessionManager, SessionRecord
from kiosk_sandbox.signaling import Signaling, server_info
from kiosk_sandbox.tokens import mint_self_token
from kiosk_sandbox.workers import WorkerPool

logger = logging.getLogger(__name__)

AGENT_UNPUBLISH_TIMEOUT_S = 1.0
AGENT_STOP_TIMEOUT_S = 5.0
AgentMode = Literal["scripted", "workers", "none"]
AGENT_MODES: tuple[AgentMode, ...] = ("scripted", "workers", "none")


class Sandbox:
    """LiveKit + a vendor broker + a voice agent, locally: ``async with Sandbox(port=0) as sb: ...``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 7880,
        api_key: str | None = None,
        livekit_api_key: str | None = None,
        livekit_api_secret: str | None = None,
        state_dir: Path | None = None,
        agent_no_show_s: float = 60.0,
        agent_mode: AgentMode = "scripted",
        agent_behaviour: AgentBehaviour = "converse",
        departure_timeout_s: float = DEFAULT_DEPARTURE_TIMEOUT_S,
        rejoin_grace_s: float = REJOIN_GRACE_S,
    ) -> None:
        """Configure a sandbox on ``host``:``port`` (0 picks a free port); missing keys are generated.

        ``agent_mode`` says who joins a session's room as its agent: ``scripted`` (the built-in agent),
        ``workers`` (a job for the registered ``livekit-agents`` workers) or ``none`` (nobody is sent: an outside
        participant with a token of kind agent joins by itself). ``agent_behaviour`` is the scripted agent's
        (``converse``, ``end_call``, ``stuck``; see :mod:`kiosk_sandbox.agent_behaviours`). A participant whose
        signal is gone is removed ``departure_timeout_s`` (s) later unless it resumed; a session whose last human
        left waits ``rejoin_grace_s`` (s) for a rejoin before it ends.

        Raises:
            ValueError: an unknown agent mode or behaviour, or a timeout that is not positive.
        """
        if agent_mode not in AGENT_MODES:
            raise ValueError(f"agent mode must be one of {', '.join(AGENT_MODES)}, not {agent_mode!r}")
        if agent_behaviour not in AGENT_BEHAVIOURS:
            raise ValueError(f"agent behaviour must be one of {', '.join(AGENT_BEHAVIOURS)}, not {agent_behaviour!r}")
        if departure_timeout_s <= 0 or rejoin_grace_s < 0:
            raise ValueError("departure_timeout_s must be > 0 and rejoin_grace_s >= 0 (seconds)")
        self.agent_mode: AgentMode = agent_mode
        self.agent_behaviour: AgentBehaviour = agent_behaviour
        self.host = host
        self.port = port
        self.api_key = api_key or f"sk_sandbox_{secrets.token_hex(12)}"
        self.livekit_api_key = livekit_api_key or f"API{secrets.token_hex(6)}"
        self.livekit_api_secret = livekit_api_secret or secrets.token_urlsafe(32)
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="kiosk-sandbox-"))
        self._no_show_s = agent_no_show_s
        self.registry = RoomRegistry(departure_timeout_s=departure_timeout_s)
        self.session_manager = SessionManager(
            registry=self.registry,
            dispatch=self._dispatch,
            before_close=self._agent_leaves,
            rejoin_grace_s=rejoin_grace_s,
        )
        self._agent_by_room: dict[str, ScriptedAgent] = {}
        self.registry.observer = self.session_manager
        self.broker = Broker(
            sessions=self.session_manager,
            api_key=self.api_key,
            livekit_key=self.livekit_api_key,
            livekit_secret=self.livekit_api_secret,
        )
        self._signaling = Signaling(
            registry=self.registry, api_key=self.livekit_api_key, api_secret=self.livekit_api_secret, gate=self
        )
        self.workers = WorkerPool(
            api_key=self.livekit_api_key,
            api_secret=self.livekit_api_secret,
            server_info=server_info(),
            on_job=self._on_job,
        )
        self.room_service = RoomService(
            registry=self.registry,
            api_key=self.livekit_api_key,
            api_secret=self.livekit_api_secret,
            delete=self._delete_room,
            remove=self._remove_participant,
        )
        self._runner: web.AppRunner | None = None
        self._agents: set[asyncio.Task[None]] = set()

    @property
    def http_url(self) -> str:
        """Base URL of the broker and the session list, e.g. ``http://127.0.0.1:7880``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The LiveKit URL clients connect to, e.g. ``ws://127.0.0.1:7880``."""
        return f"ws://{self.host}:{self.port}"

    def sessions(self) -> list[dict[str, Any]]:
        """Every session record, oldest first, as ``GET /sandbox/sessions`` returns them."""
        return self.session_manager.snapshot()

    def mint_token(self, identity: str, room: str, *, agent_name: str | None = None, ttl_s: float = 900.0) -> str:
        """Mint a participant token the way a kiosk with dialect ``self`` does (with an agent dispatch if named)."""
        return mint_self_token(
            self.livekit_api_key, self.livekit_api_secret, identity, room, agent_name=agent_name, ttl_s=ttl_s
        )

    async def start(self) -> None:
        """Bind the port and start serving."""
        app = web.Application()
        self._signaling.add_routes(app)
        self.broker.add_routes(app)
        self.workers.add_routes(app)
        self.room_service.add_routes(app)
        app.router.add_get("/sandbox/sessions", self._sessions_handler)
        app.router.add_get("/", self._index)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        self.broker.ws_url = self.ws_url
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        logger.info("sandbox listening on %s", self.http_url)

    async def stop(self) -> None:
        """Close every room, let the agents leave, and stop serving."""
        await self.session_manager.end_all("server_shutdown")
        await self.registry.close_all()
        if self._agents:
            _, pending = await asyncio.wait(self._agents, timeout=AGENT_STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.workers.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        logger.info("sandbox stopped")

    async def __aenter__(self) -> Sandbox:
        """Start the sandbox."""
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the sandbox."""
        await self.stop()

    def before_join(self, room: str, claims: Claims) -> None:
        """Dispatch the agent for a self-minted token that asks for one, and count humans."""
        is_agent = bool(claims.video and claims.video.agent) or claims.kind == "agent"
        config = claims.room_config
        if not is_agent and self.session_manager.by_room(room) is None and config and config.agents:
            self.session_manager.start(
                dialect="self",
                identity=claims.identity,
                room=room,
                agent_name=config.agents[0].agent_name or DEFAULT_AGENT_NAME,
                overrides={"room_config": MessageToDict(config), "attributes": dict(claims.attributes or {})},
            )
        self.session_manager.participant_joined(room, is_agent)

    def _dispatch(self, record: SessionRecord) -> None:
        if self.agent_mode == "scripted":
            self._dispatch_scripted(record)
        elif self.agent_mode == "workers":
            task = asyncio.create_task(self._dispatch_job(record))
            self._agents.add(task)
            task.add_done_callback(self._agents.discard)

    async def _dispatch_job(self, record: SessionRecord) -> None:
        room = self.registry.get_or_create(record.room)
        metadata = json.dumps(record.overrides)
        job = await self.workers.dispatch(room=room.info(), agent_name=record.agent_name, metadata=metadata)
        if job is None:
            record.agent_job = {"error": f"no agent worker took the job for agent name {record.agent_name!r}"}

    def _on_job(self, job: agent_protocol.Job) -> None:
        record = self.session_manager.by_room(job.room.name)
        if record is not None:
            record.agent_job = {
                "id": job.id,
                "agent_name": job.agent_name,
                "worker_id": job.state.worker_id,
                "participant_identity": job.state.participant_identity,
                "status": agent_protocol.JobStatus.Name(job.state.status),
                "error": job.state.error,
            }

    def _dispatch_scripted(self, record: SessionRecord) -> None:
        token = (
            api.AccessToken(self.livekit_api_key, self.livekit_api_secret)
            .with_identity(f"agent-{record.id}")
            .with_name(record.agent_name)
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=record.room, agent=True))
            .to_jwt()
        )
        agent = ScriptedAgent(
            url=self.ws_url,
            token=token,
            record=record,
            state_dir=self.state_dir,
            no_show_s=self._no_show_s,
            behaviour=behaviour_for(record.agent_name, self.agent_behaviour),
            room_service=(self.livekit_api_key, self.livekit_api_secret),
        )
        task = asyncio.create_task(self._run_agent(agent, record))
        self._agents.add(task)
        self._agent_by_room[record.room] = agent
        task.add_done_callback(self._agents.discard)
        task.add_done_callback(lambda _: self._agent_by_room.pop(record.room, None))

    async def _agent_leaves(self, room: str) -> None:
        """Let the room's agent unpublish (or its worker end the job) before its room closes (bounded)."""
        await self.workers.terminate(room)
        agent = self._agent_by_room.get(room)
        if agent is not None:
            try:
                await asyncio.wait_for(agent.unpublish(), timeout=AGENT_UNPUBLISH_TIMEOUT_S)
            except TimeoutError:
                logger.debug("the agent of room %s did not unpublish in time", room)

    async def _run_agent(self, agent: ScriptedAgent, record: SessionRecord) -> None:
        try:
            await agent.run()
        except Exception:
            logger.exception("the scripted agent of session %s failed", record.id)
        if record.ended_at is None:
            await self.session_manager.end(record.room, "agent_left")

    async def _delete_room(self, room: str) -> None:
        """``RoomService.DeleteRoom``: end the room's session (as the broker would), or just close the room."""
        if self.session_manager.by_room(room) is not None:
            await self.session_manager.end(room, "room_deleted")
        else:
            await self.registry.close_room(room, models.DisconnectReason.ROOM_DELETED)

    async def _remove_participant(self, room_name: str, identity: str) -> bool:
        """``RoomService.RemoveParticipant``: ``leave{PARTICIPANT_REMOVED}``; return whether it was there."""
        room = self.registry.rooms.get(room_name)
        peer = room.peers.get(identity) if room is not None else None
        if room is None or peer is None:
            return False
        await room.depart(peer, models.DisconnectReason.PARTICIPANT_REMOVED, send_leave=True)
        return True

    async def _sessions_handler(self, request: web.Request) -> web.Response:
        return web.json_response({"sessions": self.sessions()})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="kiosk sandbox: LiveKit-compatible room server, broker and scripted agent\n")
