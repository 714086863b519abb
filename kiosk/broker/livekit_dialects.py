"""The LiveKit dialects: LiveKit's standard token endpoint, and tokens minted locally for a self-hosted server.

Both choose the room themselves (``{room_prefix}-{identity}-{random}``) and dispatch the named agent through the
token's room configuration. Neither has an end call: a LiveKit room ends when its participants leave.
Overrides: ``room_config`` (merged over the agent dispatch), ``attributes`` and ``metadata`` (the participant's).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from kiosk.errors import ConfigError
from kiosk.secret import SecretSource

from .base import OnRoom, build_grant, malformed, room_name, ticket_of
from .connection import ConnectionDetails, EndTicket
from .http import BrokerHttp

if TYPE_CHECKING:
    from livekit.protocol.room import RoomConfiguration

log = logging.getLogger(__name__)

LIVEKIT_OVERRIDES = ("room_config", "attributes", "metadata")


class RoomOverrides(BaseModel):
    """Per-session overrides for the LiveKit dialects, checked when the broker is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    room_config: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    metadata: str | None = None


def check_livekit_overrides(dialect: str, overrides: dict[str, Any], agent_name: str | None) -> RoomOverrides:
    """Validate ``[broker.overrides]`` for a LiveKit dialect; raise :class:`ConfigError` naming what is wrong."""
    unknown = sorted(set(overrides) - set(LIVEKIT_OVERRIDES))
    if unknown:
        raise ConfigError(
            f"broker.overrides: dialect {dialect!r} does not know {', '.join(unknown)}; "
            f"it accepts {', '.join(LIVEKIT_OVERRIDES)}"
        )
    try:
        checked = RoomOverrides.model_validate(overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"broker.overrides.{key}: {first['msg']}") from None
    from google.protobuf.json_format import ParseError

    try:
        room_configuration(agent_name, checked.room_config)
    except ParseError as exc:
        raise ConfigError(f"broker.overrides.room_config: not a LiveKit RoomConfiguration: {exc}") from None
    return checked


def room_config_dict(agent_name: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``room_config`` JSON: the agent dispatch, with the configured overrides on top."""
    config: dict[str, Any] = {}
    if agent_name:
        config["agents"] = [{"agent_name": agent_name}]
    config.update(overrides)
    return config


def room_configuration(agent_name: str | None, overrides: dict[str, Any]) -> RoomConfiguration:
    """The same room configuration as a protobuf message, for locally minted tokens.

    ``livekit.protocol`` imports every LiveKit protobuf module (3 MB of RSS), so only the LiveKit dialects load it.
    """
    from google.protobuf.json_format import ParseDict
    from livekit.protocol.room import RoomConfiguration

    message = RoomConfiguration()
    ParseDict(room_config_dict(agent_name, overrides), message)
    return message


class EndpointAnswer(BaseModel):
    """The standard token endpoint's answer."""

    model_config = ConfigDict(extra="ignore")

    server_url: str
    participant_token: str


class LiveKitEndpointBroker:
    """LiveKit's standard token endpoint at exactly ``broker.url`` (no end call: leaving the room ends it)."""

    dialect: Literal["livekit"] = "livekit"

    def __init__(
        self,
        *,
        http: BrokerHttp,
        url: str,
        identity: str,
        name: str,
        agent_name: str | None,
        room_prefix: str,
        overrides: dict[str, Any],
        timeout_s: float,
    ) -> None:
        self.url = url
        self.identity = identity
        self._http = http
        self._name = name
        self._agent_name = agent_name
        self._prefix = room_prefix
        self._overrides = check_livekit_overrides(self.dialect, overrides, agent_name)
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"LiveKitEndpointBroker(url={self.url!r}, identity={self.identity!r})"

    def start_body(self, room: str) -> dict[str, Any]:
        """The JSON body of the token request for ``room``."""
        return {
            "room_name": room,
            "participant_identity": self.identity,
            "participant_name": self._name,
            "participant_metadata": self._overrides.metadata or "",
            "participant_attributes": dict(self._overrides.attributes),
            "room_config": room_config_dict(self._agent_name, self._overrides.room_config),
        }

    async def start(self, *, deadline: float | None = None, on_room: OnRoom | None = None) -> ConnectionDetails:
        """Ask the token endpoint for a token into a fresh room."""
        deadline = time.monotonic() + self._timeout_s if deadline is None else deadline
        room = room_name(self._prefix, self.identity)
        ticket = EndTicket(dialect=self.dialect, url=self.url, room=room, identity=self.identity)
        if on_room is not None:
            on_room(ticket)
        body = await self._http.post(self.url, self.start_body(room), deadline=deadline, repeatable=True, what="start")
        try:
            answer = EndpointAnswer.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "(body)"
            raise malformed(self.dialect, f"field {field!r} is {first['type']}: {first['msg']}") from None
        return build_grant(
            dialect=self.dialect,
            server_url=answer.server_url,
            token=answer.participant_token,
            room=room,
            ticket=ticket,
            identity=self.identity,
            on_room=None,
            url=self.url,
        )

    async def end(self, session: ConnectionDetails | EndTicket, *, deadline: float | None = None) -> None:
        """Nothing to call: the room ends when the kiosk (and then the agent) leaves."""
        log.info("livekit: room %s ends by leaving it (the token endpoint has no end call)", ticket_of(session).room)


class SelfMintBroker:
    """Mints join tokens locally with the LiveKit API key and secret (self-hosted LiveKit)."""

    dialect: Literal["self"] = "self"
    url: str | None = None

    def __init__(
        self,
        *,
        livekit_url: str,
        api_key: str,
        secret: SecretSource,
        identity: str,
        name: str,
        agent_name: str | None,
        room_prefix: str,
        ttl_s: int,
        overrides: dict[str, Any],
    ) -> None:
        self.identity = identity
        self._livekit_url = livekit_url
        self._api_key = api_key
        self._secret = secret
        self._name = name
        self._agent_name = agent_name
        self._prefix = room_prefix
        self._ttl = dt.timedelta(seconds=ttl_s)
        self._overrides = check_livekit_overrides(self.dialect, overrides, agent_name)
        # livekit.api (aiohttp, jwt, cryptography: ~23 MB) only for this dialect, loaded now rather than at a press.
        importlib.import_module("livekit.api")

    def __repr__(self) -> str:
        return f"SelfMintBroker(livekit_url={self._livekit_url!r}, identity={self.identity!r})"

    def mint(self, room: str) -> str:
        """A signed join token for ``room`` (the LiveKit secret is read from its source each time)."""
        from livekit import api

        token = (
            api.AccessToken(self._api_key, self._secret.get().get_secret_value())
            .with_identity(self.identity)
            .with_name(self._name)
            .with_ttl(self._ttl)
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .with_room_config(room_configuration(self._agent_name, self._overrides.room_config))
        )
        if self._overrides.attributes:
            token = token.with_attributes(dict(self._overrides.attributes))
        if self._overrides.metadata:
            token = token.with_metadata(self._overrides.metadata)
        return token.to_jwt()

    async def start(self, *, deadline: float | None = None, on_room: OnRoom | None = None) -> ConnectionDetails:
        """Mint a token into a fresh room; nothing goes over the network."""
        room = room_name(self._prefix, self.identity)
        ticket = EndTicket(dialect=self.dialect, url=None, room=room, identity=self.identity)
        if on_room is not None:
            on_room(ticket)
        return build_grant(
            dialect=self.dialect,
            server_url=self._livekit_url,
            token=self.mint(room),
            room=room,
            ticket=ticket,
            identity=self.identity,
            on_room=None,
            url=None,
        )

    async def end(self, session: ConnectionDetails | EndTicket, *, deadline: float | None = None) -> None:
        """Nothing to call: the room on the self-hosted server ends when its participants leave."""
        log.info("self: room %s ends by leaving it", ticket_of(session).room)
