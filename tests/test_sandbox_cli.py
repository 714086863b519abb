"""``kiosk sandbox``'s banner: every pasteable [broker] block is a valid kiosk config."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from kiosk.configfile import parse_config
from kiosk.sandbox.cli import banner


def _banner(agent_mode: str) -> str:
    sandbox = SimpleNamespace(
        api_key="sk_sandbox_abc",
        http_url="http://127.0.0.1:7880",
        ws_url="ws://127.0.0.1:7880",
        livekit_api_key="APIabc",
        livekit_api_secret="secret-abc",
        agent_mode=agent_mode,
    )
    return banner(sandbox)  # type: ignore[arg-type]


def test_every_broker_block_is_valid_config() -> None:
    """Each dialect's block validates as it is printed, and names its key file instead of holding a key."""
    text = _banner("scripted")
    blocks = re.findall(r"^\[broker\]\n(?:[a-z_]+ = .*\n)+", text, flags=re.MULTILINE)
    assert len(blocks) == 4
    dialects = set()
    for block in blocks:
        config = parse_config(block, source="banner")
        dialects.add(config.broker.dialect)
        assert config.broker.api_key_file is not None
        assert "sk_sandbox_abc" not in block and "secret-abc" not in block
    assert dialects == {"lyzr", "oshara", "livekit", "self"}


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("scripted", "the built-in scripted agent joins each session"),
        ("workers", "ws://127.0.0.1:7880/agent"),
        ("none", "an outside participant with a token of kind agent joins by itself"),
    ],
)
def test_banner_says_who_plays_the_agent(mode: str, says: str) -> None:
    """The first line names the agent mode and the next lines say what it means; the secret is never printed there."""
    text = _banner(mode)
    head = text.split("LiveKit URL")[0]
    assert text.splitlines()[0].endswith(f"({mode})")
    assert says in head
    assert "secret-abc" not in head
