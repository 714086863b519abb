"""The systemd unit: it parses cleanly, keeps what the daemon needs, and its exposure score stays low."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "kiosk.service"
MAX_EXPOSURE = 2.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true",
    reason="systemd-analyze is not installed (apt-get install systemd)",
)


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        match = re.match(r"^(\w+)=(.*)$", line)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def _testable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks it)."""
    copy = tmp_path / "kiosk.service"
    copy.write_text(UNIT.read_text().replace("/opt/kiosk/venv/bin/kiosk", sys.executable))
    return copy


def test_unit_has_what_the_daemon_needs() -> None:
    """Type=notify with a watchdog, no restart on a bad config, groups, directories, credential, time sync."""
    d = _directives()
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["on-failure"]
    assert "78" in d["RestartPreventExitStatus"][0].split()
    assert int(d["WatchdogSec"][0]) > 0
    assert set(d["SupplementaryGroups"][0].split()) >= {"audio", "gpio"}
    assert d["StateDirectory"] == ["kiosk"] and d["RuntimeDirectory"] == ["kiosk"]
    assert d["LoadCredential"][0].startswith("broker-api-key:")
    after = " ".join(d["After"])
    assert "network-online.target" in after and "time-sync.target" in after
    # time-sync.target alone does not wait for NTP: the wait service does, bounded by the shipped drop-in.
    assert "systemd-time-wait-sync.service" in after and "systemd-time-wait-sync.service" in " ".join(d["Wants"])
    drop_in = UNIT.parent / "systemd-time-wait-sync.service.d" / "kiosk.conf"
    parser_drop_in = configparser.ConfigParser(interpolation=None)
    parser_drop_in.read_string(drop_in.read_text())
    assert 0 < int(parser_drop_in["Service"]["TimeoutStartSec"]) <= 120
    allowed = " ".join(d["DeviceAllow"])
    assert "char-alsa" in allowed and "char-gpiochip" in allowed
    assert "AF_INET" in d["RestrictAddressFamilies"][0]
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser.has_section("Install")


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` exits 0 and prints nothing (plain verify exits 0 on parse errors, so stderr counts)."""
    result = subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=no", str(_testable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_security_exposure_score(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the unit at or below the threshold; the score is reported."""
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--threshold={round(MAX_EXPOSURE * 10)}",
            str(_testable_copy(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"systemd exposure score: {match.group(1)} (threshold {MAX_EXPOSURE})")
    assert float(match.group(1)) <= MAX_EXPOSURE
    assert result.returncode == 0, result.stderr


def test_exec_reload_sends_sighup_to_the_main_process() -> None:
    """ExecReload, run as systemd runs it (MAINPID in the environment), delivers SIGHUP to the main process.

    It must not need /bin/kill: a minimal Debian has no procps.
    """
    (command,) = _directives()["ExecReload"]
    argv = shlex.split(command)
    assert not argv[0].startswith("-"), "a failing reload must not be ignored"
    assert Path(argv[0]).is_file(), f"{argv[0]} is not on this system"
    assert "/bin/kill" not in command and "procps" not in command
    main = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP}); print('ready', flush=True); "
            "signal.sigwait({signal.SIGHUP}); print('hup', flush=True)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert main.stdout is not None
        assert main.stdout.readline().strip() == "ready"
        env = {"PATH": "/usr/bin:/bin", "MAINPID": str(main.pid)}
        subprocess.run(argv, env=env, check=True, timeout=30)
        assert main.stdout.readline().strip() == "hup"
        assert main.wait(timeout=30) == 0
    finally:
        main.kill()
        main.wait(timeout=30)


def test_lgpio_gets_a_writable_working_directory() -> None:
    """LG_WD names the service's runtime directory (writable under ProtectSystem=strict); gpiochips are allowed."""
    d = _directives()
    env = dict(item.split("=", 1) for line in d["Environment"] for item in line.split())
    assert env["LG_WD"] == "/run/" + d["RuntimeDirectory"][0]
    assert d["ProtectSystem"] == ["strict"]
    assert any(line.startswith("char-gpiochip") for line in d["DeviceAllow"])


def test_pi_gets_lgpio_from_the_package() -> None:
    """lgpio is a dependency on 64-bit ARM Linux only (a PC or CI installs no GPIO driver)."""
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((UNIT.parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    lgpio = next(Requirement(dep) for dep in deps if dep.startswith("lgpio"))
    assert lgpio.marker is not None
    assert lgpio.marker.evaluate({"sys_platform": "linux", "platform_machine": "aarch64"})
    assert not lgpio.marker.evaluate({"sys_platform": "linux", "platform_machine": "x86_64"})
