"""LiveKit's RoomService over Twirp, through the official server SDK (``livekit.api``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from livekit import api, rtc

from kiosk_sandbox import Sandbox

TIMEOUT_S = 10.0


async def test_rooms_are_listed_created_and_deleted_through_the_server_sdk(tmp_path: Path) -> None:
    """CreateRoom opens a room, ListRooms finds it by name, DeleteRoom disconnects whoever is in it."""
    async with (
        Sandbox(host="127.0.0.1", port=0, state_dir=tmp_path, agent_mode="none") as sb,
        api.LiveKitAPI(sb.ws_url, sb.livekit_api_key, sb.livekit_api_secret) as lk,
    ):
        async with asyncio.timeout(TIMEOUT_S):
            created = await lk.room.create_room(api.CreateRoomRequest(name="lobby"))
            assert created.name == "lobby" and created.sid.startswith("RM_")
            listed = await lk.room.list_rooms(api.ListRoomsRequest(names=["lobby", "elsewhere"]))
            assert [r.sid for r in listed.rooms] == [created.sid]
            visitor = rtc.Room()
            left = asyncio.Event()
            visitor.on("disconnected", lambda _reason: left.set())
            await visitor.connect(sb.ws_url, sb.mint_token("visitor", "lobby"))
            assert visitor.name == "lobby"
            await lk.room.delete_room(api.DeleteRoomRequest(room="lobby"))
            await left.wait()
            assert not (await lk.room.list_rooms(api.ListRoomsRequest(names=["lobby"]))).rooms


async def test_the_room_service_checks_grants(tmp_path: Path) -> None:
    """A wrong secret is unauthenticated; a valid token without the needed grant is denied, naming the grant."""
    async with Sandbox(host="127.0.0.1", port=0, state_dir=tmp_path, agent_mode="none") as sb:
        async with api.LiveKitAPI(sb.ws_url, sb.livekit_api_key, "not-the-secret-" + "x" * 32) as lk:
            with pytest.raises(api.TwirpError) as wrong:
                await asyncio.wait_for(lk.room.list_rooms(api.ListRoomsRequest()), TIMEOUT_S)
            assert wrong.value.code == "unauthenticated"
        token = api.AccessToken(sb.livekit_api_key, sb.livekit_api_secret).with_grants(api.VideoGrants(room_list=True))
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.post(
                f"{sb.http_url}/twirp/livekit.RoomService/DeleteRoom",
                json={"room": "lobby"},
                headers={"Authorization": f"Bearer {token.to_jwt()}"},
            )
            listed = await client.post(
                f"{sb.http_url}/twirp/livekit.RoomService/ListRooms",
                json={},
                headers={"Authorization": f"Bearer {token.to_jwt()}"},
            )
        assert response.status_code == 403
        assert response.json() == {"code": "permission_denied", "msg": "token does not grant roomCreate"}
        assert listed.status_code == 200 and listed.json() == {}
