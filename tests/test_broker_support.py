"""Shared helpers of the broker tests: configs, fake brokers over ``httpx.MockTransport``, test tokens."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from kiosk.config import KioskConfig
from kiosk.secret import SecretSource

API_KEY = "sk_test_0123456789abcdefSECRET"
LK_SECRET = "lk-secret-0123456789abcdef0123456789"

Handler = Callable[[httpx.Request], httpx.Response]


def make_config(dialect: str, state_dir: Path, **broker: Any) -> KioskConfig:
    """A valid config for ``dialect`` (key from ``$TEST_KEY``), with ``broker`` keys on top."""
    base: dict[str, Any] = {"dialect": dialect, "api_key_env": "TEST_KEY", "timeout_s": 2.0}
    if dialect in {"lyzr", "oshara"}:
        base.update(url="https://broker.test", agent_id="agent-1")
    elif dialect == "livekit":
        base.update(url="https://broker.test/api/token", agent_name="front-desk")
    else:
        base.update(livekit_url="wss://lk.test", livekit_api_key="APItest", agent_name="front-desk")
    base.update(broker)
    return KioskConfig.model_validate(
        {
            "device": {"identity": "kiosk-t1", "name": "Test Kiosk"},
            "broker": base,
            "daemon": {"state_dir": str(state_dir)},
        }
    )


def env_secret(value: str = API_KEY) -> SecretSource:
    """A secret source reading ``$TEST_KEY`` from a private environment."""
    return SecretSource(kind="env", name="TEST_KEY", environ={"TEST_KEY": value})


def token(
    *, room: str = "room-1", identity: str = "kiosk-t1", nbf: float | None = None, exp: float | None = None
) -> str:
    """A LiveKit-shaped join token (signed with a test secret the kiosk never verifies)."""
    now = time.time()
    claims: dict[str, Any] = {
        "sub": identity,
        "iss": "APItest",
        "nbf": int(now if nbf is None else nbf),
        "exp": int(now + 600 if exp is None else exp),
        "video": {"room": room, "roomJoin": True},
    }
    return jwt.encode(claims, LK_SECRET, algorithm="HS256")


def lyzr_ok(room: str = "room-1", **overrides: Any) -> dict[str, Any]:
    """A Lyzr start answer."""
    return {"userToken": token(room=room), "livekitUrl": "wss://lk.test", "roomName": room, **overrides}


@dataclass
class FakeBroker:
    """An ``httpx.MockTransport`` handler answering from a script, recording every request."""

    answers: list[httpx.Response | Exception | Handler]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """Answer the next scripted response (the last one repeats)."""
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def client(self) -> httpx.AsyncClient:
        """An AsyncClient whose transport is this fake."""
        return httpx.AsyncClient(transport=httpx.MockTransport(self))

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies sent so far."""
        return [json.loads(r.content) for r in self.requests]


def reply(status: int, body: Any = None, **headers: str) -> httpx.Response:
    """A JSON response."""
    return httpx.Response(status, json=body if body is not None else {}, headers=headers)


async def eventually(predicate: Callable[[], object], within: float = 5.0, step: float = 0.02) -> None:
    """Wait until ``predicate()`` is true, failing after ``within`` seconds."""
    for _ in range(int(within / step)):
        if predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within} s")
