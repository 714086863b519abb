"""The one small interface every dialect implements, and the steps they share to turn an answer into a grant."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Protocol

from pydantic import SecretStr

from kiosk.config import Dialect
from kiosk.errors import BrokerError
from kiosk.reasons import FailureReason

from .connection import ConnectionDetails, EndTicket, clock_problem, decode_token
from .policy import insecure_url_problem, url_for_log

log = logging.getLogger(__name__)

#: Called with the end ticket as soon as the room is known, before the grant is checked any further.
OnRoom = Callable[[EndTicket], None]


class Broker(Protocol):
    """Start a session (get a grant) and end it again."""

    @property
    def dialect(self) -> Dialect:
        """Which broker dialect this is."""
        ...

    @property
    def url(self) -> str | None:
        """The broker's address written into session records (None when tokens are minted locally)."""
        ...

    @property
    def identity(self) -> str:
        """The participant identity sessions are started for."""
        ...

    async def start(self, *, deadline: float | None = None, on_room: OnRoom | None = None) -> ConnectionDetails:
        """Ask for a grant; ``deadline`` is a ``time.monotonic()`` value bounding every attempt and retry."""
        ...

    async def end(self, session: ConnectionDetails | EndTicket, *, deadline: float | None = None) -> None:
        """End the session at the broker; return only once the broker confirmed it (or there is nothing to call)."""
        ...


def ticket_of(session: ConnectionDetails | EndTicket) -> EndTicket:
    """The end ticket of a grant, or the ticket itself."""
    return session.ticket if isinstance(session, ConnectionDetails) else session


def room_name(prefix: str, identity: str) -> str:
    """A fresh room name ``{prefix}-{identity}-{random}`` for dialects that choose their own room."""
    return f"{prefix}-{identity}-{secrets.token_hex(4)}"


def malformed(dialect: str, problem: str) -> BrokerError:
    """A malformed-response error naming the dialect and the field."""
    return BrokerError(f"{dialect}: malformed broker response: {problem}", reason=FailureReason.BROKER_MALFORMED)


def build_grant(
    *,
    dialect: Dialect,
    server_url: str,
    token: str,
    room: str | None,
    ticket: EndTicket | None,
    identity: str,
    on_room: OnRoom | None,
    url: str | None,
) -> ConnectionDetails:
    """Decode the token, report the room, check the scheme, note the clock, return the grant (never logs the token)."""
    if ticket is None and room:
        # Record the room before anything else can fail, so the session can still be ended.
        ticket = EndTicket(dialect=dialect, url=url, room=room, identity=identity)
        if on_room is not None:
            on_room(ticket)
    claims = decode_token(token, dialect=dialect)
    if ticket is not None and claims.room and claims.room != ticket.room:
        # Joined anyway, the kiosk would sit in a room no agent comes to: a grant failure, ended at the broker.
        raise malformed(dialect, f"the token is for room {claims.room!r}, but the broker named room {ticket.room!r}")
    if ticket is None:
        if not claims.room:
            raise malformed(dialect, "no room name in the answer or in the token")
        ticket = EndTicket(dialect=dialect, url=url, room=claims.room, identity=identity)
        if on_room is not None:
            on_room(ticket)
    if not server_url.lower().startswith(("ws://", "wss://", "http://", "https://")):
        raise malformed(dialect, f"the LiveKit URL {url_for_log(server_url)!r} is not a ws(s):// URL")
    problem = insecure_url_problem(server_url)
    if problem is not None:
        raise malformed(dialect, f"the LiveKit URL {problem}")
    local_problem = clock_problem(claims)
    if local_problem is not None:
        # Not refused here: the LiveKit server judges the token, and the local clock may be what is wrong.
        log.warning("%s: %s; trying it anyway (the LiveKit server judges the token)", dialect, local_problem)
    grant = ConnectionDetails(
        dialect=dialect,
        server_url=server_url,
        token=SecretStr(token),
        room=ticket.room,
        identity=claims.identity or identity,
        expires_at=claims.expires_at,
        not_before=claims.not_before,
        ticket=ticket,
        local_clock_problem=local_problem,
    )
    log.info(
        "%s: granted room %s at %s, token expires %s (in %.0f s)",
        dialect,
        grant.room,
        url_for_log(server_url),
        grant.expires_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        grant.expires_in_s(),
    )
    return grant
