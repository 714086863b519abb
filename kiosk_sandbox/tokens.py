"""Tokens as a kiosk with dialect ``self`` mints them: room join plus, optionally, an agent dispatch."""

from __future__ import annotations

import datetime

from livekit import api


def mint_self_token(
    key: str, secret: str, identity: str, room: str, *, agent_name: str | None = None, ttl_s: float = 900.0
) -> str:
    """Return a token for ``identity`` in ``room``; naming ``agent_name`` adds a ``RoomConfiguration`` dispatch."""
    token = (
        api.AccessToken(key, secret)
        .with_identity(identity)
        .with_ttl(datetime.timedelta(seconds=ttl_s))
        .with_grants(api.VideoGrants(room_join=True, room=room))
    )
    if agent_name is not None:
        token = token.with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent_name)]))
    return token.to_jwt()
