"""``kiosk demo`` as the README runs it: a whole session with WAV files for a sound card, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.audio import SpeechClip


def test_demo_completes_one_session_without_a_sound_card(speech: SpeechClip, tmp_path: Path) -> None:
    """`kiosk demo --sessions 1 --mic-wav ... --speaker-wav ...` ends by silence, prints the summary, writes audio."""
    out = tmp_path / "speaker.wav"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiosk",
            "demo",
            "--sessions",
            "1",
            "--mic-wav",
            str(speech.wav),
            "--speaker-wav",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    shown = result.stdout + result.stderr[-3000:]
    assert "-- session 1" in text, shown
    assert "ended by silence" in text, shown
    assert "press-to-live:" in text and "never live" not in text, shown
    assert "broker session: ended" in text, shown
    assert "agent: Hello, this is the sandbox agent." in text, shown
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 48000
        played = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32)
    assert float(np.sqrt(np.mean(played**2))) > 100, shown


def test_demo_json_prints_one_object_per_session(speech: SpeechClip, tmp_path: Path) -> None:
    """With --json, stdout holds one JSON object per session (summary and what the agent heard), nothing else."""
    command = [sys.executable, "-m", "kiosk", "demo", "--sessions", "1", "--mic-wav", str(speech.wav), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    [line] = result.stdout.splitlines()
    data = json.loads(line)
    assert data["session"]["end_reason"] == "silence" and data["session"]["room"]
    assert data["agent_heard"]["greeted"] is True and data["agent_heard"]["ended_at_broker"] is True
    assert "kiosk demo: 1 session(s); exit 0" in result.stderr


def test_demo_without_audio_devices_says_how_to_run(tmp_path: Path) -> None:
    """With no sound card and no --mic-wav, the demo says so and shows the flags."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sounddevice as sd; print(sd.default.device)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)},
    )
    if "-1" not in probe.stdout:
        pytest.skip(f"this machine has default audio devices ({probe.stdout.strip()})")
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)},
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "no audio" in result.stderr
    assert "--mic-wav" in result.stderr and "--speaker-wav" in result.stderr


def test_a_demo_whose_session_fails_exits_non_zero_naming_the_reason(speech: SpeechClip, tmp_path: Path) -> None:
    """With nobody to answer (``--agent none``) the session fails as agent_no_show: the demo exits 1 and its last
    line names the session and the reason, so a script (or the README's first command) stops there."""
    command = [
        sys.executable,
        "-m",
        "kiosk",
        "demo",
        "--sessions",
        "1",
        "--mic-wav",
        str(speech.wav),
        "--agent",
        "none",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    shown = result.stdout + result.stderr[-3000:]
    assert result.returncode == 1, shown
    assert "ended by failure" in result.stdout, shown
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last == "kiosk demo: FAILED: session 1 went live, then failed: agent_no_show: the agent did not join the room"
    )


@pytest.mark.parametrize("slow", ["0.5", "21"])
@pytest.mark.parametrize("given", ["flag", "environment"])
def test_slow_outside_its_range_is_refused(slow: str, given: str) -> None:
    """``--slow`` (or ``KIOSK_DEMO_SLOW``) stretches deadlines by 1 to 20 times; anything else is refused by name
    before anything starts."""
    command = [sys.executable, "-m", "kiosk", "demo"]
    env = dict(os.environ)
    if given == "flag":
        command += ["--slow", slow]
    else:
        env["KIOSK_DEMO_SLOW"] = slow
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 2
    assert f"--slow (or KIOSK_DEMO_SLOW) must be between 1 and 20 (got {float(slow):g})" in result.stderr


def test_a_slow_environment_that_is_no_number_is_named() -> None:
    """A ``KIOSK_DEMO_SLOW`` that is not a number is refused with its value."""
    env = {**os.environ, "KIOSK_DEMO_SLOW": "fast"}
    command = [sys.executable, "-m", "kiosk", "demo"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 2
    assert "KIOSK_DEMO_SLOW must be a number between 1 and 20 (got 'fast')" in result.stderr


def test_the_verdict_names_the_first_failed_session() -> None:
    """A session that never went live, or ended by a failure, fails the demo; so do fewer sessions than asked."""
    from kiosk.commands.demo import demo_verdict
    from kiosk.daemon.sessionsummary import SessionSummary

    def summary(number: int, live: float | None, end: str, failure: str | None = None) -> SessionSummary:
        return SessionSummary(number, "r", live, 1.0, end, 0.0, [], failure=failure)

    fine = summary(1, 300.0, "silence")
    assert demo_verdict([fine], wanted=1) is None
    never = summary(2, None, "failure", "broker_unreachable")
    assert demo_verdict([fine, never], wanted=None) == (
        "session 2 never went live: broker_unreachable: the broker could not be reached (network, DNS, broker.url)"
    )
    assert demo_verdict([fine], wanted=2) == "1 of 2 session(s) ran"


def test_slow_stretches_the_demo_deadlines() -> None:
    """``slow`` multiplies the demo's connect, agent-join (10 s each) and first-words (5 s) deadlines, nothing else."""
    from kiosk.configfile import parse_config
    from kiosk.demo.runner import demo_config

    info = {"http_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1", "livekit_api_key": "k"}
    text = demo_config(
        dialect="lyzr", info=info, workdir=Path("/tmp/demo"), silence_s=6.0, log_level="info", voice_wake=False, slow=3
    )
    session = parse_config(text).session
    stretched = (session.connect_timeout_s, session.agent_join_timeout_s, session.first_words_timeout_s)
    assert stretched == (30.0, 30.0, 15.0)
    assert session.silence_timeout_s == 6.0
