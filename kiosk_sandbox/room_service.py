"""LiveKit's RoomService over Twirp (``POST /twirp/livekit.RoomService/<Method>``): rooms and removing a participant.

``DeleteRoom`` disconnects everyone with ``leave{ROOM_DELETED}`` (what ``livekit-agents``' ``EndCallTool`` ends a
call with); ``RemoveParticipant`` sends that participant ``leave{PARTICIPANT_REMOVED}`` (``not_found`` if absent).

Enough of the server API for tools that look a room up before joining it, such as ``python agent.py connect --room
NAME`` of ``livekit-agents`` (an agent that joins by itself under ``kiosk sandbox --agent none``). Requests and
answers are protobuf (``application/protobuf``) or JSON (``application/json``); errors are Twirp's JSON
``{"code", "msg"}``. The grants are livekit-server's: ``roomList`` to list, ``roomCreate`` to create or delete.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from google.protobuf.message import DecodeError, Message
from livekit import api
from livekit.protocol import models
from livekit.protocol import room as room_api

from kiosk_sandbox.rooms import RoomRegistry
from kiosk_sandbox.signaling import Unauthorized, bearer_claims

logger = logging.getLogger(__name__)

PREFIX = "/twirp/livekit.RoomService/"
M = TypeVar("M", bound=Message)
_PROTOBUF = "application/protobuf"


class TwirpError(Exception):
    """A Twirp error: ``code`` (``unauthenticated``, ``permission_denied``, ...) and an HTTP status."""

    def __init__(self, code: str, status: int, message: str) -> None:
        """Describe the failure."""
        super().__init__(message)
        self.code = code
        self.status = status


class RoomService:
    """``ListRooms``, ``CreateRoom`` and ``DeleteRoom`` on the sandbox's rooms."""

    def __init__(
        self,
        *,
        registry: RoomRegistry,
        api_key: str,
        api_secret: str,
        delete: Callable[[str], Awaitable[None]],
        remove: Callable[[str, str], Awaitable[bool]],
    ) -> None:
        """Serve rooms of ``registry`` to tokens signed with ``api_key``/``api_secret``.

        ``delete(name)`` ends a room; ``remove(room, identity)`` removes a participant and says whether it was in.
        """
        self._registry = registry
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._delete = delete
        self._remove = remove

    def add_routes(self, app: web.Application) -> None:
        """Register ``POST /twirp/livekit.RoomService/{method}`` on ``app``."""
        app.router.add_post(PREFIX + "{method}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        """Run one method and answer in the request's encoding."""
        as_json = request.content_type == "application/json"
        try:
            answer = await self._call(request, request.match_info["method"], as_json=as_json)
        except TwirpError as exc:
            return web.json_response({"code": exc.code, "msg": str(exc)}, status=exc.status)
        if as_json:
            return web.Response(text=MessageToJson(answer), content_type="application/json")
        return web.Response(body=answer.SerializeToString(), content_type=_PROTOBUF)

    async def _call(self, request: web.Request, method: str, *, as_json: bool) -> Message:
        try:
            claims = bearer_claims(self._verifier, request)
        except Unauthorized as exc:
            raise TwirpError("unauthenticated", 401, str(exc)) from exc
        video = claims.video or api.VideoGrants()
        body = await request.read()
        if method == "ListRooms":
            _require(bool(video.room_list), "roomList")
            listing = _parse(room_api.ListRoomsRequest(), body, as_json=as_json)
            rooms = [r.info() for r in self._registry.rooms.values() if not r.closed]
            return room_api.ListRoomsResponse(rooms=[r for r in rooms if not listing.names or r.name in listing.names])
        if method == "CreateRoom":
            _require(bool(video.room_create), "roomCreate")
            create = _parse(room_api.CreateRoomRequest(), body, as_json=as_json)
            if not create.name:
                raise TwirpError("invalid_argument", 400, "name: a room needs a name")
            if create.name in self._registry.closed_names:
                raise TwirpError("failed_precondition", 412, f"room {create.name} has been deleted")
            logger.info("room %s created through the RoomService", create.name)
            room: models.Room = self._registry.get_or_create(create.name).info()
            return room
        if method == "DeleteRoom":
            _require(bool(video.room_create), "roomCreate")
            delete = _parse(room_api.DeleteRoomRequest(), body, as_json=as_json)
            await self._delete(delete.room)
            return room_api.DeleteRoomResponse()
        if method == "RemoveParticipant":
            _require(bool(video.room_admin), "roomAdmin")
            who = _parse(room_api.RoomParticipantIdentity(), body, as_json=as_json)
            if not await self._remove(who.room, who.identity):
                raise TwirpError("not_found", 404, f"participant {who.identity} is not in room {who.room}")
            return room_api.RemoveParticipantResponse()
        raise TwirpError("bad_route", 404, f"the sandbox does not offer RoomService.{method}")


def _require(granted: bool, grant: str) -> None:
    if not granted:
        raise TwirpError("permission_denied", 403, f"token does not grant {grant}")


def _parse(message: M, body: bytes, *, as_json: bool) -> M:
    try:
        if as_json:
            Parse(body.decode() or "{}", message)
        else:
            message.ParseFromString(body)
    except (DecodeError, ParseError, UnicodeDecodeError) as exc:
        raise TwirpError("malformed", 400, f"the request body is not a {type(message).__name__}: {exc}") from exc
    return message
