"""``scripts/install.sh --root DIR``: every file, owner and mode it creates, idempotence, uninstall, dry run.

The root is a temporary directory with its own ``etc/passwd`` and ``etc/group``, so the user and groups are made
there (``useradd --root``) and owners are checked by number. A ``systemctl`` placed first on ``PATH`` records any
call: with ``--root`` the script must only print its systemctl commands.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install.sh"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and shadow's useradd (--root DIR)"
)


def _seed(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\naudio:x:29:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\naudio:*::\n")


def _install(root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    spy = bin_dir / "systemctl"
    spy.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "systemctl-calls"}\n')
    spy.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(SCRIPT), "--root", str(root), "--pip-args", "--no-deps", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def _ids(root: Path, name: str) -> tuple[int, int]:
    line = next(x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith(name + ":"))
    fields = line.split(":")
    return int(fields[2]), int(fields[3])


def _owner_mode(path: Path) -> tuple[int, int, str]:
    info = path.lstat()
    return info.st_uid, info.st_gid, oct(stat.S_IMODE(info.st_mode))


@pytest.mark.slow
def test_install_creates_every_file_with_owner_and_mode(tmp_path: Path) -> None:
    """User in the existing groups, venv at the unit's ExecStart, /etc/kiosk with a 0600 key, the unit; no systemctl."""
    root = tmp_path / "root"
    _seed(root)
    result = _install(root, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    uid, gid = _ids(root, "kiosk")
    assert uid > 0 and gid > 0
    passwd = (root / "etc/passwd").read_text()
    assert f"kiosk:x:{uid}:{gid}:voice kiosk daemon:/var/lib/kiosk:/usr/sbin/nologin" in passwd
    assert "audio:x:29:kiosk" in (root / "etc/group").read_text()
    expected = {
        "opt/kiosk": (0, 0, "0o755"),
        "opt/kiosk/venv": (0, 0, "0o755"),
        "opt/kiosk/README.md": (0, 0, "0o644"),
        "etc/kiosk": (0, gid, "0o750"),
        "etc/kiosk/kiosk.toml": (0, gid, "0o640"),
        "etc/kiosk/broker-api-key": (0, 0, "0o600"),
        "etc/systemd/system/kiosk.service": (0, 0, "0o644"),
        "etc/systemd/system/systemd-time-wait-sync.service.d/kiosk.conf": (0, 0, "0o644"),
    }
    for relative, owner_mode in expected.items():
        assert _owner_mode(root / relative) == owner_mode, relative
    assert (root / "etc/kiosk/broker-api-key").read_bytes() == b""
    assert (root / "etc/kiosk/kiosk.toml").read_text() == (REPO / "config/kiosk.toml").read_text()
    unit = (root / "etc/systemd/system/kiosk.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    binary = exec_start.removeprefix("ExecStart=").split()[0]
    assert os.access(root / binary.lstrip("/"), os.X_OK), binary
    # No gpio group here: the unit must not name it, or systemd would refuse to start the service.
    assert "SupplementaryGroups=audio\n" in unit
    assert "no group gpio on this system" in result.stdout
    assert not (tmp_path / "systemctl-calls").exists()
    assert "(not run: --root " in result.stdout and "systemctl enable kiosk.service" in result.stdout
    created = {str(p.relative_to(root)) for p in root.rglob("*") if "venv/" not in str(p.relative_to(root))}
    seeds = {"etc", "etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"}
    backups = {p for p in created if p.endswith(("-", ".lock"))}
    folders = {"opt", "etc/systemd", "etc/systemd/system", "etc/systemd/system/systemd-time-wait-sync.service.d"}
    assert created - seeds - backups == set(expected) | folders

    # Again, with the key written, the config edited and a gpio group present: kept, and the unit follows the groups.
    (root / "etc/kiosk/broker-api-key").write_text("sk_test_key\n")
    (root / "etc/kiosk/kiosk.toml").write_text("# edited\n")
    with (root / "etc/group").open("a") as group:
        group.write("gpio:x:997:\n")
    with (root / "etc/gshadow").open("a") as gshadow:
        gshadow.write("gpio:*::\n")
    again = _install(root, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (root / "etc/kiosk/broker-api-key").read_text() == "sk_test_key\n"
    assert (root / "etc/kiosk/kiosk.toml").read_text() == "# edited\n"
    assert "kept the existing /etc/kiosk/kiosk.toml" in again.stdout
    assert sum(line.startswith("kiosk:") for line in (root / "etc/passwd").read_text().splitlines()) == 1
    assert "gpio:x:997:kiosk" in (root / "etc/group").read_text()
    assert "SupplementaryGroups=audio gpio\n" in (root / "etc/systemd/system/kiosk.service").read_text()
    assert _ids(root, "kiosk") == (uid, gid)

    removed = _install(root, tmp_path, "--uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (root / "opt/kiosk").exists() and not (root / "etc/systemd/system/kiosk.service").exists()
    assert not (root / "etc/systemd/system/systemd-time-wait-sync.service.d/kiosk.conf").exists()
    assert not any(line.startswith("kiosk:") for line in (root / "etc/passwd").read_text().splitlines())
    assert (root / "etc/kiosk/broker-api-key").read_text() == "sk_test_key\n"
    assert "kept /etc/kiosk" in removed.stdout
    purged = _install(root, tmp_path, "--uninstall", "--purge")
    assert purged.returncode == 0 and not (root / "etc/kiosk").exists()
    assert not (tmp_path / "systemctl-calls").exists()


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    """--dry-run prints each step and creates nothing."""
    root = tmp_path / "root"
    _seed(root)
    before = sorted(p.name for p in root.rglob("*"))
    result = _install(root, tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.rglob("*")) == before
    assert "+ useradd --root" in result.stdout and f"{root}/opt/kiosk/venv" in result.stdout
    assert not (tmp_path / "systemctl-calls").exists()


def test_a_root_without_user_files_is_named(tmp_path: Path) -> None:
    """``--root`` on an empty directory stops before anything is made and names the files it needs."""
    root = tmp_path / "root"
    root.mkdir()
    result = _install(root, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--root {root} has no etc/passwd" in result.stderr
    assert list(root.iterdir()) == []
