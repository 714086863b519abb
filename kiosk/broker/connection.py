"""What a broker grants (:class:`ConnectionDetails`: a LiveKit server URL and participant token) and what ending a
session needs (an :class:`EndTicket`).

Its token is a :class:`pydantic.SecretStr`, so ``repr`` and ``str`` of a grant never show it. The token is
decoded here without verifying its signature (the kiosk does not hold the broker's signing key): only to learn its
validity window and room, and to tell a wrong local clock apart from a bad token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from kiosk.config import Dialect
from kiosk.errors import BrokerError
from kiosk.reasons import FailureReason

from .clock import CLOCK_LEEWAY_S


class EndTicket(BaseModel):
    """Everything ending a session needs, and nothing secret: safe to write to the state directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dialect: Dialect
    url: str | None
    room: str
    identity: str


class TokenClaims(BaseModel):
    """The parts of a LiveKit join token the kiosk looks at (decoded, not verified)."""

    model_config = ConfigDict(frozen=True)

    not_before: dt.datetime | None
    expires_at: dt.datetime
    identity: str | None
    room: str | None
    room_join: bool


class ConnectionDetails(BaseModel):
    """A broker's answer, the *grant*: where to connect, with which token, into which room, and how to end it.

    Named as LiveKit's starter front ends name the same answer from a token server (``ConnectionDetails``: server
    URL, room, participant token).
    """

    model_config = ConfigDict(frozen=True)

    dialect: Dialect
    server_url: str
    token: SecretStr
    room: str
    identity: str
    expires_at: dt.datetime
    not_before: dt.datetime | None = None
    ticket: EndTicket
    #: Why the token looked unusable by the local clock when it arrived (:func:`clock_problem`), if it did.
    local_clock_problem: str | None = None

    def expires_in_s(self, *, now: float | None = None) -> float:
        """Seconds until the token expires by the local clock (negative once expired)."""
        current = time.time() if now is None else now
        return self.expires_at.timestamp() - current


def _timestamp(claims: dict[str, Any], name: str, dialect: str) -> dt.datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BrokerError(
            f"{dialect}: the token's '{name}' claim is not a number", reason=FailureReason.BROKER_MALFORMED
        )
    return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)


def _payload(token: str) -> dict[str, Any]:
    """The claims of a compact JWS (RFC 7515 section 7.1: header.payload.signature, base64url without padding).

    Unverified on purpose, so no crypto library is needed (PyJWT pulls in ``cryptography``: 0.6 s and megabytes
    at start). Raises ``ValueError`` naming what is wrong, never quoting the token.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"{len(parts)} dot-separated parts instead of 3")
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("its payload is not base64url-encoded JSON") from None
    if not isinstance(claims, dict):
        raise ValueError("its payload is not a JSON object")
    return claims


def decode_token(token: str, *, dialect: str) -> TokenClaims:
    """Decode a join token without verifying it; raise a malformed-response error if it is not a LiveKit JWT."""
    try:
        claims = _payload(token)
    except ValueError as exc:
        raise BrokerError(
            f"{dialect}: the token is not a valid JWT ({exc})", reason=FailureReason.BROKER_MALFORMED
        ) from None
    expires_at = _timestamp(claims, "exp", dialect)
    if expires_at is None:
        raise BrokerError(f"{dialect}: the token has no 'exp' claim", reason=FailureReason.BROKER_MALFORMED)
    video = claims.get("video")
    video = video if isinstance(video, dict) else {}
    room = video.get("room")
    identity = claims.get("sub")
    return TokenClaims(
        not_before=_timestamp(claims, "nbf", dialect),
        expires_at=expires_at,
        identity=identity if isinstance(identity, str) and identity else None,
        room=room if isinstance(room, str) and room else None,
        room_join=video.get("roomJoin") is True,
    )


def clock_problem(claims: TokenClaims, *, now: float | None = None, leeway_s: float = CLOCK_LEEWAY_S) -> str | None:
    """Why the token looks unusable by the local clock (not yet valid, or expired), or None when it looks fine.

    Only a hint: the LiveKit server judges the token, and the local clock may be the one that is wrong.
    """
    current = time.time() if now is None else now
    local = dt.datetime.fromtimestamp(current, tz=dt.UTC).isoformat(timespec="seconds")
    if claims.not_before is not None and claims.not_before.timestamp() > current + leeway_s:
        ahead = claims.not_before.timestamp() - current
        return (
            f"the token only becomes valid at {claims.not_before.isoformat(timespec='seconds')}, "
            f"{ahead:.0f} s after the local time {local}"
        )
    if claims.expires_at.timestamp() <= current - leeway_s:
        behind = current - claims.expires_at.timestamp()
        return (
            f"the token expired at {claims.expires_at.isoformat(timespec='seconds')}, "
            f"{behind:.0f} s before the local time {local}"
        )
    return None
