"""The screen's systemd unit: it parses cleanly, keeps the broker key out of reach, and stays tightly hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "kiosk-screen.service"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def _testable_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "kiosk-screen.service"
    copy.write_text(UNIT.read_text().replace("/opt/kiosk/venv/bin/kiosk", sys.executable))
    return copy


def test_unit_runs_the_screen_apart_from_the_key() -> None:
    """Its own dynamic user in group kiosk (the control socket), no way to the key file, loopback only."""
    text = UNIT.read_text()
    assert re.search(r"^ExecStart=\S+/kiosk screen --config /etc/kiosk/kiosk.toml$", text, re.M)
    assert re.search(r"^DynamicUser=yes$", text, re.M) and re.search(r"^SupplementaryGroups=kiosk$", text, re.M)
    assert "LoadCredential" not in text
    assert re.search(r"^InaccessiblePaths=-/etc/kiosk/broker-api-key$", text, re.M)
    assert re.search(r"^IPAddressDeny=any$", text, re.M) and re.search(r"^IPAddressAllow=localhost$", text, re.M)
    assert re.search(r"^RestartPreventExitStatus=78$", text, re.M)


@needs_analyze
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    """`systemd-analyze verify` is silent and `security --offline=yes` rates it at or below 2.0."""
    unit = _testable_copy(tmp_path)
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--threshold={round(MAX_EXPOSURE * 10)}", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert match, security.stdout + security.stderr
    print(f"kiosk-screen exposure score: {match.group(1)} (threshold {MAX_EXPOSURE})")
    assert float(match.group(1)) <= MAX_EXPOSURE and security.returncode == 0
