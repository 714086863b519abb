"""The vendor brokers the kiosk speaks (Lyzr, Oshara, LiveKit's token endpoint), strictly as documented."""

from __future__ import annotations

import datetime
import hmac
import json
import logging
import secrets
import time
from typing import Any

from aiohttp import web
from google.protobuf.json_format import ParseDict, ParseError
from livekit import api
from livekit.protocol.room import RoomConfiguration

from kiosk_sandbox.ids import new_room_name
from kiosk_sandbox.sessions import SessionManager

logger = logging.getLogger(__name__)

USER_TOKEN_TTL = datetime.timedelta(minutes=15)
DEFAULT_AGENT_NAME = "sandbox-agent"


class BadRequest(Exception):
    """A request field is missing or has the wrong type; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        """Describe what is wrong with ``field``."""
        super().__init__(f"{field}: {message}")
        self.field = field


class Broker:
    """HTTP handlers of the three broker dialects, minting tokens for the sandbox's rooms."""

    def __init__(self, *, sessions: SessionManager, api_key: str, livekit_key: str, livekit_secret: str) -> None:
        """Check requests against ``api_key`` and mint tokens with the LiveKit ``livekit_key``/``livekit_secret``."""
        self._sessions = sessions
        self._api_key = api_key
        self._lk_key = livekit_key
        self._lk_secret = livekit_secret
        self.ws_url = ""

    def add_routes(self, app: web.Application) -> None:
        """Register every broker endpoint on ``app``."""
        app.router.add_post("/v1/sessions/start", self.lyzr_start)
        app.router.add_post("/v1/sessions/end", self.lyzr_end)
        app.router.add_post("/api/agents/agent-session/", self.oshara_session)
        app.router.add_post("/api/token", self.token_endpoint)

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("x-api-key", "")
        return bool(given) and hmac.compare_digest(given.encode(), self._api_key.encode())

    def mint(
        self,
        *,
        identity: str,
        room: str,
        name: str = "",
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        room_config: RoomConfiguration | None = None,
    ) -> str:
        """Return a short-lived participant token for ``identity`` in ``room``."""
        token = (
            api.AccessToken(self._lk_key, self._lk_secret)
            .with_identity(identity)
            .with_name(name or identity)
            .with_ttl(USER_TOKEN_TTL)
            .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True))
        )
        if metadata:
            token = token.with_metadata(metadata)
        if attributes:
            token = token.with_attributes(attributes)
        if room_config is not None:
            token = token.with_room_config(room_config)
        return token.to_jwt()

    async def lyzr_start(self, request: web.Request) -> web.Response:
        """``POST /v1/sessions/start`` {userIdentity, agentId, agentConfig} -> {userToken, livekitUrl, roomName}."""
        if not self._authorized(request):
            return _error(401, "invalid or missing x-api-key")
        try:
            body = await _body(request)
            agent_id = _string(body, "agentId", required=True)
            identity = _string(body, "userIdentity") or f"user-{secrets.token_hex(4)}"
            config = body.get("agentConfig", {})
            if not isinstance(config, dict):
                raise BadRequest("agentConfig", "must be an object")
        except BadRequest as exc:
            return _error(400, str(exc), field=exc.field)
        room = new_room_name()
        record = self._sessions.start(
            dialect="lyzr", identity=identity, room=room, agent_name=agent_id, overrides={"agentConfig": config}
        )
        return web.json_response(
            {
                "userToken": self.mint(identity=identity, room=room),
                "livekitUrl": self.ws_url,
                "roomName": room,
                "sessionId": record.id,
                "agentId": agent_id,
                "userIdentity": identity,
            }
        )

    async def lyzr_end(self, request: web.Request) -> web.Response:
        """``POST /v1/sessions/end`` {roomName}: end the session and disconnect everyone."""
        if not self._authorized(request):
            return _error(401, "invalid or missing x-api-key")
        try:
            room = _string(await _body(request), "roomName", required=True)
        except BadRequest as exc:
            return _error(400, str(exc), field=exc.field)
        record = await self._sessions.end(room, "broker_end")
        if record is None:
            return _error(404, f"no session in room {room}", field="roomName")
        record.broker_ended_at = record.broker_ended_at or time.time()
        return web.json_response({"success": True, "roomName": room, "sessionId": record.id})

    async def oshara_session(self, request: web.Request) -> web.Response:
        """``POST /api/agents/agent-session/`` {agent, ...overrides} -> {success, message, data{token, ...}}."""
        if not self._authorized(request):
            return web.json_response({"success": False, "message": "invalid or missing x-api-key"}, status=401)
        try:
            body = await _body(request)
            agent = _string(body, "agent", required=True)
            names = ("language", "system_prompt", "greeting", "reference_audio_url")
            overrides = {n: _string(body, n) for n in names if n in body}
        except BadRequest as exc:
            return web.json_response({"success": False, "message": str(exc), "field": exc.field}, status=400)
        room = new_room_name()
        identity = f"visitor-{secrets.token_hex(4)}"
        self._sessions.start(dialect="oshara", identity=identity, room=room, agent_name=agent, overrides=overrides)
        data = {"token": self.mint(identity=identity, room=room), "livekit_url": self.ws_url, "room_name": room}
        return web.json_response({"success": True, "message": "Request successful", "data": data})

    async def token_endpoint(self, request: web.Request) -> web.Response:
        """LiveKit's standard token endpoint: JSON request -> 201 {server_url, participant_token}."""
        if not self._authorized(request):
            return _error(401, "invalid or missing x-api-key")
        try:
            body = await _body(request)
            room = _string(body, "room_name") or new_room_name()
            identity = _string(body, "participant_identity") or f"user-{secrets.token_hex(4)}"
            name = _string(body, "participant_name")
            metadata = _string(body, "participant_metadata")
            attributes = body.get("participant_attributes") or {}
            if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
                raise BadRequest("participant_attributes", "must be an object of strings")
            raw_config = body.get("room_config") or {}
            if not isinstance(raw_config, dict):
                raise BadRequest("room_config", "must be an object")
            config = ParseDict(raw_config, RoomConfiguration())
        except ParseError as exc:
            return _error(400, f"room_config: {exc}", field="room_config")
        except BadRequest as exc:
            return _error(400, str(exc), field=exc.field)
        agents = [a.agent_name for a in config.agents]
        overrides = {"room_config": raw_config, "attributes": attributes}
        if self._sessions.by_room(room) is None:
            self._sessions.start(
                dialect="livekit",
                identity=identity,
                room=room,
                agent_name=agents[0] if agents and agents[0] else DEFAULT_AGENT_NAME,
                overrides=overrides,
            )
        token = self.mint(
            identity=identity,
            room=room,
            name=name,
            metadata=metadata,
            attributes=attributes,
            room_config=config if raw_config else None,
        )
        return web.json_response({"server_url": self.ws_url, "participant_token": token}, status=201)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("body", "must be a JSON object") from exc
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    return body


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(name, "this field is required")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(name, "must be a non-empty string" if required else "must be a string")
    return value


def _error(status: int, message: str, *, field: str | None = None) -> web.Response:
    payload: dict[str, Any] = {"error": message, "message": message}
    if field is not None:
        payload["field"] = field
    return web.json_response(payload, status=status)
