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
