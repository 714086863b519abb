"""scripts/check_wheels.py: a package pip had to build on this machine (no wheel for its CPU) fails the arm64 stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _dist(site: Path, name: str, version: str, *tags: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: test\n" + "".join(f"Tag: {tag}\n" for tag in tags))


def _check(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_wheels.py"), str(site)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_wheels_for_the_cpu_and_pure_python_pass(tmp_path: Path) -> None:
    """manylinux aarch64 wheels, pure-Python wheels and systemd-python (which publishes none) are fine."""
    _dist(tmp_path, "livekit", "1.2.1", "py3-none-manylinux_2_28_aarch64")
    _dist(tmp_path, "numpy", "2.4.6", "cp311-cp311-manylinux_2_27_aarch64", "cp311-cp311-manylinux_2_28_aarch64")
    _dist(tmp_path, "httpx", "0.29.0", "py3-none-any")
    _dist(tmp_path, "systemd-python", "235", "cp311-cp311-linux_aarch64")
    result = _check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "came as a wheel" in result.stdout


def test_a_package_built_here_fails_by_name(tmp_path: Path) -> None:
    """A dependency with no aarch64 wheel, compiled by pip on the kiosk (tag linux_aarch64), fails the check."""
    _dist(tmp_path, "livekit", "1.2.1", "py3-none-manylinux_2_28_aarch64")
    _dist(tmp_path, "webrtcvad-wheels", "2.0.14", "cp311-cp311-linux_aarch64")
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "webrtcvad-wheels==2.0.14 (cp311-cp311-linux_aarch64)" in result.stderr
    assert "livekit" not in result.stderr


def test_this_environment_passes() -> None:
    """The test suite's own environment came from wheels (systemd-python aside)."""
    import sysconfig

    result = _check(Path(sysconfig.get_paths()["purelib"]))
    assert result.returncode == 0, result.stderr
