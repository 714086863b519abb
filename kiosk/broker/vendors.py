"""The vendor dialects: Lyzr (explicit start and end calls) and Oshara (a session call; ending is leaving the room).

Field names, casing and envelopes follow the vendors' integration guides exactly.

Lyzr: ``POST {url}/v1/sessions/start {userIdentity, agentId, agentConfig}`` answers
``{userToken, livekitUrl, roomName, ...}``; ``POST {url}/v1/sessions/end {roomName}`` ends it. The room is recorded
the moment the answer names it; a start whose answer never arrived cannot be ended by the kiosk (the kiosk never
learned the room), which is why a start is not repeated once it may have reached Lyzr.

Oshara: ``POST {url}/api/agents/agent-session/ {agent, language, system_prompt, greeting, reference_audio_url}``
answers ``{success, message, data: {token, livekit_url, room_name}}``. Oshara documents no end call: the session
ends when the kiosk leaves the room, so :meth:`OsharaBroker.end` calls nothing (the session is still recorded and
its record removed like any other).
"""

from __future__ import annotations

import abc
import logging
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from kiosk.errors import BrokerError, ConfigError
from kiosk.reasons import FailureReason

from .base import OnRoom, build_grant, malformed, ticket_of
from .connection import ConnectionDetails, EndTicket
from .http import BrokerHttp, BrokerHttpError
from .policy import scrub

log = logging.getLogger(__name__)

OSHARA_OVERRIDES = ("language", "system_prompt", "greeting", "reference_audio_url")


def _field_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(body)"
    if first["type"] == "missing":
        return f"field {field!r} is missing"
    return f"field {field!r} is wrong: {first['msg']}"


class _VendorBroker(abc.ABC):
    """What both vendor dialects hold: the HTTP caller, the broker's address, the agent and the overrides."""

    def __init__(
        self, *, http: BrokerHttp, url: str, agent_id: str, identity: str, overrides: dict[str, Any], timeout_s: float
    ) -> None:
        self.url = url
        self.identity = identity
        self._http = http
        self._agent_id = agent_id
        self._overrides = self._check_overrides(overrides)
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, identity={self.identity!r})"

    @abc.abstractmethod
    def _check_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Validate ``[broker.overrides]`` for this dialect; raise ConfigError naming any unknown key."""


class LyzrStart(BaseModel):
    """Lyzr's answer to ``/v1/sessions/start`` (extra fields ignored)."""

    model_config = ConfigDict(extra="ignore")

    userToken: str  # Lyzr's casing
    livekitUrl: str
    roomName: str


class LyzrBroker(_VendorBroker):
    """Lyzr's voice API: start returns a token and room, end is an explicit call."""

    dialect: Literal["lyzr"] = "lyzr"

    def _check_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return dict(overrides)  # Lyzr takes any agentConfig

    def start_body(self) -> dict[str, Any]:
        """The JSON body of the start request."""
        return {"userIdentity": self.identity, "agentId": self._agent_id, "agentConfig": self._overrides}

    async def start(self, *, deadline: float | None = None, on_room: OnRoom | None = None) -> ConnectionDetails:
        """Start a Lyzr session; report the room through ``on_room`` as soon as the answer names it."""
        deadline = time.monotonic() + self._timeout_s if deadline is None else deadline
        body = await self._http.post(
            f"{self.url}/v1/sessions/start", self.start_body(), deadline=deadline, repeatable=False, what="start"
        )
        room = body.get("roomName") if isinstance(body, dict) else None
        if isinstance(room, str) and room and on_room is not None:
            on_room(EndTicket(dialect=self.dialect, url=self.url, room=room, identity=self.identity))
        try:
            answer = LyzrStart.model_validate(body)
        except ValidationError as exc:
            raise malformed(self.dialect, _field_problem(exc)) from None
        return build_grant(
            dialect=self.dialect,
            server_url=answer.livekitUrl,
            token=answer.userToken,
            room=answer.roomName,
            ticket=EndTicket(dialect=self.dialect, url=self.url, room=answer.roomName, identity=self.identity),
            identity=self.identity,
            on_room=None,
            url=self.url,
        )

    async def end(self, session: ConnectionDetails | EndTicket, *, deadline: float | None = None) -> None:
        """End the session with ``POST /v1/sessions/end {roomName}`` (a room Lyzr no longer knows counts as ended)."""
        ticket = ticket_of(session)
        deadline = time.monotonic() + self._timeout_s if deadline is None else deadline
        url = ticket.url or self.url
        try:
            await self._http.post(
                f"{url}/v1/sessions/end", {"roomName": ticket.room}, deadline=deadline, repeatable=True, what="end"
            )
        except BrokerHttpError as exc:
            if exc.status in (404, 410):
                log.info("lyzr: room %s was already gone at the broker (404); counting it as ended", ticket.room)
                return
            raise
        log.info("lyzr: ended room %s", ticket.room)


class OsharaData(BaseModel):
    """The ``data`` member of Oshara's answer."""

    model_config = ConfigDict(extra="ignore")

    token: str
    livekit_url: str
    room_name: str | None = None


class OsharaStart(BaseModel):
    """Oshara's answer envelope ``{success, message, data}``."""

    model_config = ConfigDict(extra="ignore")

    success: bool
    message: str | None = None
    data: OsharaData | None = None


def check_oshara_overrides(overrides: dict[str, Any]) -> dict[str, str]:
    """Keep the overrides Oshara knows (all strings); raise :class:`ConfigError` naming any others."""
    unknown = sorted(set(overrides) - set(OSHARA_OVERRIDES))
    if unknown:
        raise ConfigError(
            f"broker.overrides: dialect 'oshara' does not know {', '.join(unknown)}; "
            f"it accepts {', '.join(OSHARA_OVERRIDES)}"
        )
    wrong = sorted(key for key, value in overrides.items() if not isinstance(value, str))
    if wrong:
        raise ConfigError(f"broker.overrides: {', '.join(wrong)} must be text for dialect 'oshara'")
    return {key: str(value) for key, value in overrides.items()}


class OsharaBroker(_VendorBroker):
    """Oshara's enterprise API: one session call; ending is leaving the room."""

    dialect: Literal["oshara"] = "oshara"

    def _check_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return dict(check_oshara_overrides(overrides))

    def start_body(self) -> dict[str, Any]:
        """The JSON body of the session request: the agent plus any per-session overrides at top level."""
        return {"agent": self._agent_id, **self._overrides}

    async def start(self, *, deadline: float | None = None, on_room: OnRoom | None = None) -> ConnectionDetails:
        """Create an Oshara session and return its grant."""
        deadline = time.monotonic() + self._timeout_s if deadline is None else deadline
        body = await self._http.post(
            f"{self.url}/api/agents/agent-session/",
            self.start_body(),
            deadline=deadline,
            repeatable=False,
            what="start",
        )
        try:
            answer = OsharaStart.model_validate(body)
        except ValidationError as exc:
            raise malformed(self.dialect, _field_problem(exc)) from None
        if not answer.success:
            message = scrub(answer.message or "no message")
            raise BrokerError(
                f"oshara: the broker refused the session: {message}", reason=FailureReason.BROKER_REJECTED
            )
        if answer.data is None:
            raise malformed(self.dialect, "field 'data' is missing")
        return build_grant(
            dialect=self.dialect,
            server_url=answer.data.livekit_url,
            token=answer.data.token,
            room=answer.data.room_name,
            ticket=None,
            identity=self.identity,
            on_room=on_room,
            url=self.url,
        )

    async def end(self, session: ConnectionDetails | EndTicket, *, deadline: float | None = None) -> None:
        """Nothing to call: Oshara ends the session when the kiosk leaves the room."""
        log.info("oshara: room %s ends by leaving it (no end call in Oshara's API)", ticket_of(session).room)
