"""``kiosk test mic`` and ``kiosk test speaker`` as an installer runs them, on a headless PulseAudio's null sinks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.audio import AUDIO_DIR, PulseServer, SpeechClip
from tests.fixtures.hwtest import write_config

pytestmark = pytest.mark.pulse
REPO = Path(__file__).resolve().parents[1]


def _start(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "KIOSK_CONFIG"}
    return subprocess.Popen(
        [sys.executable, "-m", "kiosk", "test", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _after_first_line(process: subprocess.Popen[str], pulse: PulseServer, wav: Path) -> tuple[str, str]:
    """Wait for the command's first line (it is listening), play ``wav`` into the mic sink, collect the output."""
    assert process.stdout is not None
    first = process.stdout.readline()
    player = pulse.play(wav)
    try:
        out, err = process.communicate(timeout=60)
    finally:
        player.terminate()
        player.wait(timeout=5)
    return first + out, err


def test_mic_meter_hears_speech(tmp_path: Path, pulse_server: PulseServer, speech: SpeechClip) -> None:
    """Speech played into the mic sink shows as SPEECH in the meter, and the verdict is good (exit 0)."""
    config = write_config(tmp_path)
    process = _start("mic", "--config", str(config), "--device", "kiosk_pulse_mic", "--seconds", "5")
    out, err = _after_first_line(process, pulse_server, speech.wav)
    assert process.returncode == 0, out + err
    assert out.startswith("listening to kiosk_pulse_mic for 5 s")
    assert "SPEECH" in out and "dBFS" in out
    assert "verdict:      good:" in out
    assert "ALSA lib" not in err


def test_mic_scan_suggests_the_input_that_hears(tmp_path: Path, pulse_server: PulseServer, speech: SpeechClip) -> None:
    """--scan tries each matching input and suggests the one the speech reached (JSON lines with --json)."""
    config = write_config(tmp_path)
    process = _start("mic", "--config", str(config), "--scan", "--device", "kiosk_pulse", "--seconds", "2.5", "--json")
    assert process.stdout is not None
    player = pulse_server.play(speech.wav)
    try:
        out, err = process.communicate(timeout=60)
    finally:
        player.terminate()
        player.wait(timeout=5)
    assert process.returncode == 0, out + err
    lines = [json.loads(line) for line in out.splitlines()]
    tried = [line["name"] for line in lines if line["kind"] == "input"]
    assert "kiosk_pulse_mic" in tried and len(tried) >= 2
    assert lines[-1] == {"kind": "suggestion", "input_device": "kiosk_pulse_mic", "index": lines[-1]["index"]}
    # kiosk_pulse_spk cannot be opened for capture: PortAudio's complaints go to the debug log, not stderr.
    assert "Expression" not in err and "ALSA lib" not in err


def test_speaker_plays_tone_chimes_and_speech(tmp_path: Path, pulse_server: PulseServer) -> None:
    """The tone reaches the speaker sink at its frequency and the configured volume, followed by the speech."""
    config = write_config(tmp_path, "[audio]\noutput_volume = 0.5\n")
    recording = AUDIO_DIR / "speaker_test.raw"
    recorder = pulse_server.record(recording)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kiosk", "test", "speaker", "--config", str(config), "--device", "kiosk_pulse_spk"],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=REPO,
            check=False,
        )
    finally:
        recorder.terminate()
        recorder.wait(timeout=5)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "at volume 0.5 (audio.output_volume)" in done.stdout
    assert "tone: 440 Hz" in done.stdout and "chime: connected" in done.stdout and "speech: 'This is" in done.stdout
    heard = np.fromfile(recording, dtype="<i2").astype(np.float64)
    loud = np.flatnonzero(np.abs(heard) > 2000)
    assert len(loud) > 0, "nothing reached the speaker sink"
    tone = heard[loud[0] : loud[0] + 24_000]
    # A null sink fed through the pulse plugin can drop blocks at the start: time the pitch by the median
    # half-period between zero crossings, which gaps do not bend (an FFT over a gapped tone reads low).
    crossings = np.flatnonzero(np.diff(np.signbit(tone[np.abs(tone) > 0])))
    assert 48_000 / (2 * np.median(np.diff(crossings))) == pytest.approx(440, abs=5)
    # Half-scale tone at volume 0.5: peaks near a quarter of full scale.
    assert np.max(np.abs(tone)) == pytest.approx(32767 * 0.25, rel=0.1)
    assert "ALSA lib" not in done.stderr
    # The speech comes last: sound well over a second after the tone and chimes ended.
    assert loud[-1] - loud[0] > 48_000 * 4
