"""A state directory the kiosk cannot write (read-only, full): named ``state_dir`` with the fix, never a leak.

Through ``kiosk run`` on a real file system: a small tmpfs mounted over the state directory, remounted read-only or
filled to the last byte, and unmounted afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.commands.control import request_once
from tests.fixtures.audio import PulseServer
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.kiosk_process import DEVICES, KEY_ENV, kiosk_run, wait_until
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.pulse


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def small_tmpfs(where: Path, *, damage: str) -> Iterator[None]:
    """A 64 KiB tmpfs at ``where``, ``"read-only"`` (remounted ro) or ``"full"`` (filled); unmounted at the end."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "kiosk-test-state", str(where))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount): {exc}")
    try:
        (where / "sessions").mkdir(mode=0o700)
        if damage == "read-only":
            _mount("-o", "remount,ro", str(where))
        else:
            with (where / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 4096)
            with pytest.raises(OSError) as full:
                (where / "sessions" / "x").write_bytes(b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True, timeout=10)


@pytest.mark.parametrize(("damage", "says"), [("read-only", "is on a read-only file system"), ("full", "is full")])
def test_a_press_on_an_unwritable_state_directory_names_it_and_the_fix(
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    tmp_path: Path,
    damage: str,
    says: str,
) -> None:
    """Every press is refused as state_dir (not "internal"); the log names the directory, what is wrong, the fix."""
    state = tmp_path / "state"
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES)
    socket, log = tmp_path / "control.sock", tmp_path / "daemon.log"
    before = {s["room"] for s in sandbox.sessions()}
    with (
        small_tmpfs(state, damage=damage),
        kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon,
    ):
        # Told at start, before anyone presses.
        wait_until(lambda: f"the state directory {state} (daemon.state_dir) " in log.read_text(), 20, "the warning")
        for number in (1, 2):
            assert request_once(socket, {"cmd": "press"})["did"] == "started a session"

            def ended(number: int = number) -> Any:
                last = request_once(socket, {"cmd": "status"})["last_end"]
                return last if last and last["session"] == number else None

            assert wait_until(ended, 20, f"the end of session {number}", log)["failure"] == "state_dir"
            wait_until(lambda: request_once(socket, {"cmd": "status"})["state"] == "idle", 20, "idle", log)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    output = log.read_text()
    assert f"the state directory {state} (daemon.state_dir) {says}" in output, output[-3000:]
    assert "point daemon.state_dir at" in output and "Traceback" not in output
    # No session was opened at the broker: nothing is left open.
    assert {s["room"] for s in sandbox.sessions()} == before
