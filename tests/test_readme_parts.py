"""The parts list (docs/hardware.md): every TOML block of the tested combinations passes ``kiosk check-config`` as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Parts list and the combinations the tests cover"
BROKER = '[broker]\ndialect = "livekit"\nurl = "http://127.0.0.1:9"\n\n'


def parts_blocks() -> list[str]:
    """The ```toml blocks of the parts list section of docs/hardware.md."""
    text = (REPO / "docs" / "hardware.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    end = len(text) if end < 0 else end
    return re.findall(r"```toml\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_parts_list_has_the_three_builds() -> None:
    """Button + LED, the ReSpeaker 2-mic HAT (a ring) and the speakerphone with volume and mute buttons."""
    blocks = parts_blocks()
    assert len(blocks) == 3
    assert 'kind = "single"' in blocks[0]
    assert 'kind = "apa102"' in blocks[1] and "button_pin = 17" in blocks[1]
    assert "mute_pin" in blocks[2] and 'echo_cancellation = "auto"' in blocks[2]


@pytest.mark.parametrize("number", [0, 1, 2])
def test_check_config_accepts_each_block(tmp_path: Path, number: int) -> None:
    """``kiosk check-config`` (a real process) exits 0 on the block plus a broker, and echoes its settings."""
    block = parts_blocks()[number]
    path = tmp_path / "kiosk.toml"
    path.write_text(BROKER + block)
    env = {k: v for k, v in os.environ.items() if k not in {"KIOSK_CONFIG", "CREDENTIALS_DIRECTORY"}}
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for line in block.splitlines():
        if "=" in line and not line.startswith("["):
            key, value = (part.strip() for part in line.split("=", 1))
            assert f"{key} = {value}" in result.stdout, (key, value)
