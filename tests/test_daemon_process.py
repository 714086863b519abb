"""``kiosk run`` as systemd runs it: a subprocess with real PulseAudio devices, a real notify socket and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from kiosk.commands.control import request_once
from tests.fixtures.audio import PulseServer, SpeechClip
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until_sync

KEY_ENV = "KIOSK_TEST_BROKER_KEY"


def test_sigterm_mid_call_ends_the_broker_session(
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    speech: SpeechClip,
    notify_socket: NotifySocket,
    tmp_path: Path,
) -> None:
    """Press over the socket, talk into the PulseAudio mic, hear the agent on the speaker sink, then SIGTERM.

    The daemon ends the session at the broker and exits 0 within 5 s, telling systemd READY, STATUS, WATCHDOG and
    STOPPING; its output never contains the API key.
    """
    extra = '[audio]\ninput_device = "kiosk_pulse_mic"\noutput_device = "kiosk_pulse_spk"\n'
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=60, extra=extra)
    env = {
        **os.environ,
        KEY_ENV: sandbox.api_key,
        "NOTIFY_SOCKET": str(notify_socket.path),
        "WATCHDOG_USEC": "2000000",
        "PULSE_SERVER": pulse_server.env["PULSE_SERVER"],
    }
    log_path = tmp_path / "daemon.log"
    speaker_raw = tmp_path / "speaker.raw"
    recorder = pulse_server.record(speaker_raw)
    with log_path.open("w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "kiosk", "run", "--config", str(config)], env=env, stdout=log, stderr=log
        )
    socket_path = tmp_path / "control.sock"
    try:
        notify_socket.wait_for("READY=1", within=30)
        player = pulse_server.play(speech.wav, "mic")
        answer = request_once(socket_path, {"cmd": "press"})
        assert answer["ok"] and answer["did"] == "started a session"
        until_sync(lambda: request_once(socket_path, {"cmd": "status"})["state"] == "live", 20, "live")
        player.wait(timeout=30)
        status = request_once(socket_path, {"cmd": "status"})
        room = status["session"]["room"]
        # a device glitch on a loaded machine is reopened at once; the call must have working audio again
        until_sync(lambda: request_once(socket_path, {"cmd": "status"})["audio"]["ok"], 10, "audio ok")
        until_sync(
            lambda: sandbox.session(room)["heard"].get("speech_seconds", 0) > 1.0, 20, "the agent to hear speech"
        )
        until_sync(lambda: speaker_raw.exists() and speaker_raw.stat().st_size > 48000 * 2 * 2, 20, "speaker audio")
        sent = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        recorder.terminate()
        recorder.wait(timeout=5)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=5)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert took < 5.0
    record = sandbox.session(room)
    assert record["ended_at"] is not None and record["end_reason"] == "broker_end", json.dumps(record)
    played = np.fromfile(speaker_raw, dtype="<i2").astype(np.float32)
    assert float(np.sqrt(np.mean(played**2))) > 50, "the agent was not heard at the speaker sink"
    lines = notify_socket.lines()
    assert "READY=1" in lines and "WATCHDOG=1" in lines and "STOPPING=1" in lines
    assert any(line.startswith("STATUS=live") for line in lines)
    assert sandbox.api_key not in output
    assert "shutdown" in output


def test_bad_config_exits_78_before_touching_hardware(tmp_path: Path) -> None:
    """A config with a misspelt key stops the daemon with 78 (systemd will not restart it) and names the key."""
    config = tmp_path / "kiosk.toml"
    config.write_text(
        '[broker]\ndialect = "lyzr"\nurl = "https://b"\nagent_id = "a"\napi_key_env = "K"\n'
        "[session]\nsilence_timout_s = 3\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "K": "x"},
    )
    assert result.returncode == 78
    assert "did you mean 'session.silence_timeout_s'?" in result.stderr
