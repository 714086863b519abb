"""Identifiers in LiveKit's shape: the SDK rejects sids without the right prefix."""

from __future__ import annotations

import secrets


def new_sid(prefix: str) -> str:
    """Return a fresh sid such as ``PA_3kq9x0m2c1ab`` for prefix ``PA``."""
    return f"{prefix}_{secrets.token_hex(6)}"


def new_room_name() -> str:
    """Return a fresh, unguessable room name."""
    return f"sandbox-{secrets.token_hex(5)}"
