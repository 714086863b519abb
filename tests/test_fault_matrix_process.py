"""The fault matrix, continued: faults of the process itself, its state directory and its GPIO.

Each case needs a ``kiosk run`` of its own (a signal ends it, or it starts on a broken directory or without pins),
so these are fewer and kept apart from the shared daemon of :mod:`tests.test_fault_matrix`.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from kiosk.commands.control import request_once
from tests.fixtures.audio import PulseServer
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.kiosk_process import DEVICES, KEY_ENV, ended_at_broker, kiosk_run, wait_until
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.pulse


def _live_room(socket: Path, log: Path) -> str:
    assert request_once(socket, {"cmd": "press"})["did"] == "started a session"
    wait_until(lambda: request_once(socket, {"cmd": "status"})["state"] == "live", 30, "live", log)
    return str(request_once(socket, {"cmd": "status"})["session"]["room"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_process_stopped_while_live(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path, sig: int
) -> None:
    """systemd stops the kiosk mid-session: STOPPING, the session ended at the broker as ``shutdown``, exit 0."""
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES, silence_s=60)
    log, socket = tmp_path / "daemon.log", tmp_path / "control.sock"
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
        room = _live_room(socket, log)
        daemon.send_signal(sig)
        assert daemon.wait(timeout=20) == 0
    output = log.read_text()
    assert "STOPPING=1" in notify_socket.lines()
    assert ended_at_broker(sandbox, room), output[-3000:]
    assert "live -> ending" in output and sandbox.api_key not in output and "Traceback" not in output


def test_process_killed_while_live_is_ended_at_the_next_start(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """SIGKILL (or power loss) mid-session: the state directory keeps the record; the next start ends it."""
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES, silence_s=60)
    log, socket = tmp_path / "daemon.log", tmp_path / "control.sock"
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
        room = _live_room(socket, log)
        daemon.kill()
        daemon.wait(timeout=10)
    assert not ended_at_broker(sandbox, room)
    assert list((tmp_path / "state" / "sessions").glob("*.json")), "no session record survived the kill"
    restart_log = tmp_path / "restart.log"
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=restart_log) as daemon:
        # The sandbox may already have closed the room the killed kiosk left; the broker end is what counts.
        wait_until(lambda: f"ended room {room}" in restart_log.read_text(), 30, "the leftover's end", restart_log)
        assert sandbox.session(room)["ended_at"] is not None
        wait_until(lambda: not list((tmp_path / "state" / "sessions").glob("*.json")), 10, "the record removed")
        assert request_once(socket, {"cmd": "status"})["state"] == "idle"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    assert sandbox.api_key not in restart_log.read_text()


@pytest.mark.parametrize("damage", ["not-json", "empty", "wrong-fields"])
def test_state_directory_with_a_damaged_record(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path, damage: str
) -> None:
    """A half-written or foreign session record does not stop the kiosk: it is moved aside, named once, and the
    kiosk serves a session that is ended at the broker as usual."""
    sessions = tmp_path / "state" / "sessions"
    sessions.mkdir(parents=True, mode=0o700)
    body = {"not-json": '{"id": "abc", "dia', "empty": "", "wrong-fields": '{"id": 7, "colour": "blue"}'}[damage]
    (sessions / "abc.json").write_text(body)
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES, silence_s=60)
    log, socket = tmp_path / "daemon.log", tmp_path / "control.sock"
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
        wait_until(lambda: "is unreadable" in log.read_text(), 20, "the damaged record named", log)
        room = _live_room(socket, log)
        assert request_once(socket, {"cmd": "press"})["did"] == "ended the session"
        wait_until(lambda: ended_at_broker(sandbox, room), 20, "the broker end", log)
        wait_until(lambda: request_once(socket, {"cmd": "status"})["state"] == "idle", 20, "idle", log)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    output = log.read_text()
    assert "Traceback" not in output and sandbox.api_key not in output


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"GPIOZERO_PIN_FACTORY": "mock", "GPIOZERO_MOCK_PIN_CLASS": "mockpin"}, "has no PWM with this pin driver"),
        ({"GPIOZERO_PIN_FACTORY": "mock", "GPIOZERO_MOCK_PIN_CLASS": "mockpwmpin"}, "kiosk ready"),
    ],
    ids=["no-pwm", "pwm"],
)
def test_gpio_without_pwm_or_with_it(
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    says: str,
) -> None:
    """LEDs on pins without PWM blink on/off instead of failing; a session runs and is ended at the broker.
    (No GPIO backend at all: tests/test_faults.py.)"""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    extra = DEVICES + '[trigger]\nbutton_pin = 17\n\n[leds]\nkind = "single"\npin = 27\n'
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=extra, silence_s=60)
    log, socket = tmp_path / "daemon.log", tmp_path / "control.sock"
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
        room = _live_room(socket, log)
        assert request_once(socket, {"cmd": "press"})["did"] == "ended the session"
        wait_until(lambda: ended_at_broker(sandbox, room), 20, "the broker end", log)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    output = log.read_text()
    assert says in output and "Traceback" not in output and sandbox.api_key not in output
