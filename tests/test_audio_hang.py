"""A PortAudio call that never returns (the speaker's PulseAudio sink missing): bounded, named, and survived.

The hanging part runs in a child process: a stream whose start hung can never be closed, and PortAudio's exit
handler would abort the process that holds it (see kiosk.audio.worker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.commands.control import request_once
from tests.fixtures.audio import PulseServer
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.kiosk_process import DEVICES, KEY_ENV, DaemonDied, kiosk_run, wait_until
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.pulse

#: Child runs tried when one crashed in libasound's pulse plugin while opening the missing sink.
CHILD_ATTEMPTS = 3


def test_a_start_that_hangs_on_a_missing_sink_is_abandoned_and_named(pulse_server: PulseServer, tmp_path: Path) -> None:
    """With the speaker's sink missing, the ALSA pulse plugin sometimes opens the stream and then never starts it:
    the engine gives up after START_TIMEOUT_S with an audio_device error naming the device, and PortAudio still
    serves the other device (the microphone reopens); no rescan is tried afterwards.

    Opening the missing sink also crashes the process now and then (SIGSEGV inside ``Pa_OpenStream``, native code;
    seen in about 1 child run in 5, each opening it 10-40 times); such a run is tried again, up to ``CHILD_ATTEMPTS``."""
    pulse_server.unload_sink("spk")
    crashes: list[str] = []
    try:
        for attempt in range(CHILD_ATTEMPTS):
            fault_file = tmp_path / f"fault-{attempt}.txt"
            done = subprocess.run(
                [sys.executable, "-c", "from tests.fixtures.hangchild import child; child()"],
                env={
                    **os.environ,
                    "PULSE_SERVER": pulse_server.env["PULSE_SERVER"],
                    "KIOSK_TEST_FAULT_FILE": str(fault_file),
                },
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            fault = fault_file.read_text(errors="replace") if fault_file.exists() else ""
            # Only a crash inside the open is retried; anything else fails the test.
            if done.returncode == -signal.SIGSEGV and "in _open_stream" in fault:
                crashes.append(fault)
                continue
            break
    finally:
        pulse_server.restart()
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, (
        f"the child printed no result (exit {done.returncode}, {len(crashes)} crash(es) in an open before):\n"
        f"{done.stderr[-3000:]}\n{fault[-3000:]}"
    )
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert "unbounded_s" not in result, f"an open/start of the missing sink did not return: {result}"
    if result["hung"] is None:
        pytest.skip(f"no open of the missing sink hung in {result['tries']} tries on this machine")
    assert "did not return within" in result["hung"] and "'kiosk_pulse_spk'" in result["hung"], result
    assert result["hung_took_s"] < 15, result
    assert result["input_reopened"] is True and result["stderr_back"] is True, result
    assert result["rescan"] is False and len(result["hung_calls"]) == 1, result


STARTS = 4


def test_kiosk_run_with_the_speaker_sink_missing_is_ready_every_time(
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    tmp_path: Path,
) -> None:
    """The issue's case: ``kiosk run`` started 4 times with the speaker's sink missing reaches READY each time
    (1 or 2 in 4 hung for more than 40 s before), answers ``kiosk status`` with the speaker failing in words, and
    stops on SIGTERM.

    The ALSA pulse plugin's ``Pa_OpenStream`` on the missing sink sometimes crashes the process (SIGSEGV in native
    code, right after the microphone opened; see the test above): such a start is made again, as systemd's
    ``Restart=`` does, up to ``CHILD_ATTEMPTS`` times per start. Any other exit before READY fails the test."""
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES)
    socket = tmp_path / "control.sock"
    pulse_server.unload_sink("spk")
    try:
        for start in range(STARTS):
            for attempt in range(CHILD_ATTEMPTS):
                log = tmp_path / f"daemon-{start}-{attempt}.log"
                notify_socket.messages.clear()
                try:
                    _ready_and_named(config, sandbox, pulse_server, notify_socket, log, socket)
                    break
                except DaemonDied as died:
                    if died.returncode != -signal.SIGSEGV or attempt == CHILD_ATTEMPTS - 1:
                        raise
    finally:
        pulse_server.restart()


def _ready_and_named(
    config: Path, sandbox: SandboxHandle, pulse: PulseServer, notify: NotifySocket, log: Path, socket: Path
) -> None:
    """One start: READY, the speaker failing by name in ``kiosk status``, a clean stop on SIGTERM."""
    with kiosk_run(config, sandbox=sandbox, pulse=pulse, notify=notify, log=log) as daemon:
        status = wait_until(lambda: request_once(socket, {"cmd": "status"}), 10, "status", log)
        output = status["audio"]["output"]
        assert output["ok"] is False and "kiosk_pulse_spk" in str(output["last_error"]), output
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
