"""Faults that could leak a paid session, through ``kiosk run`` as systemd runs it.

The daemon is a subprocess with PulseAudio devices and a real notify socket; the broker is a real HTTP server on
127.0.0.1 in front of the sandbox's (:mod:`tests.fixtures.faultbroker`), so the sandbox's record of the session says
whether it was ended at the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kiosk.commands.control import request_once
from tests.fixtures.audio import PulseServer
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.faultbroker import FaultBroker
from tests.fixtures.kiosk_process import DEVICES, KEY_ENV, ended_at_broker, kiosk_run, wait_until
from tests.fixtures.sandbox import SandboxHandle


def test_sigterm_while_a_slow_start_is_under_way_still_ends_the_session(
    sandbox: SandboxHandle,
    fault_broker: FaultBroker,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    tmp_path: Path,
) -> None:
    """The start takes 4 s and SIGTERM comes during it: the daemon waits for the answer, ends the session, exits 0."""
    fault_broker.start_delay_s = 4.0
    config = daemon_config(http_url=fault_broker.url, tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES)
    log = tmp_path / "daemon.log"
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
        assert request_once(tmp_path / "control.sock", {"cmd": "press"})["did"] == "started a session"
        assert fault_broker.starts.wait(20), "the start never reached the broker"
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=20)  # systemd's TimeoutStopSec is 15 s
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert len(fault_broker.ends) == 1, output[-3000:]
    assert ended_at_broker(sandbox, fault_broker.ends[0])
    assert sandbox.api_key not in output


def test_a_start_answer_that_trickles_past_the_connect_deadline_is_read_and_ended(
    sandbox: SandboxHandle,
    fault_broker: FaultBroker,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    tmp_path: Path,
) -> None:
    """Headers at once, the body over 5 s, the connect deadline at 2 s: the room is learned and the session ended."""
    fault_broker.trickle_s = 5.0
    config = daemon_config(
        http_url=fault_broker.url, tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES, connect_timeout_s=2.0
    )
    socket = tmp_path / "control.sock"
    log = tmp_path / "daemon.log"
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
        assert request_once(socket, {"cmd": "press"})["did"] == "started a session"
        last_end = wait_until(lambda: request_once(socket, {"cmd": "status"})["last_end"], 30, "the session's end", log)
        wait_until(lambda: fault_broker.ends, 20, "the broker end", log)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    output = log.read_text()
    assert last_end["failure"] == "broker_timeout", output[-3000:]
    assert ended_at_broker(sandbox, fault_broker.ends[0]), output[-3000:]
    assert "after the connect deadline" in output


def test_no_gpio_backend_runs_without_leds_and_button(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """No pin factory can be had (this machine has no GPIO): READY anyway, one line per part saying why."""
    extra = DEVICES + '[trigger]\nbutton_pin = 17\n\n[leds]\nkind = "single"\npin = 27\n'
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=extra)
    log = tmp_path / "daemon.log"
    no_mock = ("GPIOZERO_PIN_FACTORY", "GPIOZERO_MOCK_PIN_CLASS")
    with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log, unset=no_mock) as daemon:
        assert request_once(tmp_path / "control.sock", {"cmd": "status"})["state"] == "idle"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    output = log.read_text()
    assert "status LEDs unavailable, running without" in output
    assert "button unavailable, running without" in output
    assert "Traceback" not in output


def test_an_unreadable_ca_file_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    """Exit 78 (systemd does not restart it) with one line naming the key, no traceback."""
    config = daemon_config(http_url="https://broker.invalid", tmp_path=tmp_path, key_env=KEY_ENV)
    config.write_text(config.read_text().replace("[broker]\n", f'[broker]\nca_file = "{tmp_path / "missing.pem"}"\n'))
    done = subprocess.run(
        [sys.executable, "-m", "kiosk", "run", "--config", str(config)],
        env={**os.environ, KEY_ENV: "kiosk-test-broker-key-0123456789"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 78, done.stderr[-2000:]
    assert "broker.ca_file" in done.stderr and "Traceback" not in done.stderr


def test_a_microphone_missing_at_start_is_opened_when_it_appears(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """No exit 69 into systemd's restart limit: READY, the fault in status, the mic opened once it is plugged in."""
    extra = DEVICES.replace("[audio]\n", "[audio]\nreopen_backoff_max_s = 1.0\n")
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=extra)
    socket = tmp_path / "control.sock"
    log = tmp_path / "daemon.log"
    pulse_server.unload_sink("mic")
    try:
        with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
            status = request_once(socket, {"cmd": "status"})
            assert status["audio"]["input"]["ok"] is False and status["audio"]["output"]["ok"] is True
            pulse_server.load_sink("mic")
            wait_until(lambda: request_once(socket, {"cmd": "status"})["audio"]["input"]["ok"], 30, "the mic", log)
            assert request_once(socket, {"cmd": "press"})["did"] == "started a session"
            wait_until(lambda: request_once(socket, {"cmd": "status"})["state"] == "live", 30, "live", log)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
    finally:
        pulse_server.restart()  # the mic sink vanished: a fresh server for later tests
    output = log.read_text()
    assert "audio input unavailable at start" in output and "Traceback" not in output


def test_a_speaker_lost_mid_session_ends_it_as_audio_device(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """The speaker sink vanishes while live and does not come back: PulseAudio moves the playback elsewhere, the
    kiosk notices, and the session ends as audio_device, at the broker."""
    extra = DEVICES.replace("[audio]\n", "[audio]\nreopen_backoff_max_s = 1.0\n")
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=60, extra=extra)
    socket = tmp_path / "control.sock"
    log = tmp_path / "daemon.log"
    try:
        with kiosk_run(config, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as daemon:
            assert request_once(socket, {"cmd": "press"})["did"] == "started a session"
            wait_until(lambda: request_once(socket, {"cmd": "status"})["state"] == "live", 30, "live", log)
            room = request_once(socket, {"cmd": "status"})["session"]["room"]
            # PulseAudio moves the playback stream to the other sink, where it plays on unheard.
            pulse_server.unload_sink("spk")
            last_end = wait_until(lambda: request_once(socket, {"cmd": "status"})["last_end"], 30, "the end", log)
            wait_until(lambda: ended_at_broker(sandbox, room), 20, "the broker end", log)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
    finally:
        pulse_server.restart()  # the speaker sink vanished and the playback was moved: a fresh server for later tests
    assert last_end["failure"] == "audio_device", log.read_text()[-3000:]
