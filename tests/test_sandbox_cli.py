"""``kiosk sandbox``'s banner: every pasteable [broker] block is a valid kiosk config, and it says who the agent is."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from kiosk.configfile import parse_config
from kiosk_sandbox.cli import banner, write_key_files


def _sandbox(tmp_path: Path, agent_mode: str = "scripted") -> SimpleNamespace:
    return SimpleNamespace(
        state_dir=tmp_path,
        api_key="sk_sandbox_abc",
        http_url="http://127.0.0.1:7880",
        ws_url="ws://127.0.0.1:7880",
        livekit_api_key="APIabc",
        livekit_api_secret="secret-abc",
        agent_mode=agent_mode,
    )


def test_every_broker_block_is_valid_config(tmp_path: Path) -> None:
    """Each dialect's block validates as printed and names the sandbox's own key file; nothing touches /etc/kiosk."""
    sandbox = _sandbox(tmp_path)
    text = banner(sandbox)  # type: ignore[arg-type]
    blocks = re.findall(r"^\[broker\]\n(?:[a-z_]+ = .*\n)+", text, flags=re.MULTILINE)
    assert len(blocks) == 4
    dialects = set()
    for block in blocks:
        config = parse_config(block, source="banner")
        dialects.add(config.broker.dialect)
        assert config.broker.api_key_file is not None
        assert "sk_sandbox_abc" not in block and "secret-abc" not in block
    assert dialects == {"lyzr", "oshara", "livekit", "self"}
    assert "/etc/kiosk/broker-api-key" not in text and "printf" not in text
    write_key_files(sandbox)  # type: ignore[arg-type]
    assert (tmp_path / "broker-api-key").read_text() == "sk_sandbox_abc\n"
    assert (tmp_path / "livekit-api-secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("scripted", "the built-in scripted agent joins each session"),
        ("workers", "ws://127.0.0.1:7880/agent"),
        ("none", "an outside participant with a token of kind agent joins by itself"),
    ],
)
def test_banner_says_who_plays_the_agent(tmp_path: Path, mode: str, says: str) -> None:
    """The first line names the agent mode and the next lines say what it means; no secret is printed."""
    text = banner(_sandbox(tmp_path, mode))  # type: ignore[arg-type]
    head = text.split("LiveKit URL")[0]
    assert text.splitlines()[0].endswith(f"({mode})")
    assert says in head
    assert "secret-abc" not in text
