"""Echo benchmark: ERLE, double-talk loss and CPU cost of the kiosk's whole mic processing path.

A synthetic room: far-end speech (the agent) leaves the speaker, comes back to the mic through a delayed,
reverberant echo path with a little noise, optionally on top of near-end speech (the visitor). Each 10 ms frame
goes through what the engine runs on the loop: the reverse stream, APM (AEC/NS/HPF/AGC), the echo gate
(:mod:`kiosk.audio.processing`) and webrtcvad segments. ERLE is also given for the APM alone, without the gate.

    python -m bench.echo [--smoke]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from kiosk.audio.processing import GATE_OFF_DBFS, Processor
from kiosk.audio.vad import VoiceActivity
from kiosk.config import AudioConfig

GOAL_ERLE_DB = 30.0
GOAL_DOUBLE_TALK_LOSS_DB = 6.0
ECHO_DELAY_S = 0.06
REPORTED_LATENCY_S = 0.06
CONVERGE_S = 2.0

FAR_TEXT = "Welcome to the library. The reading room is on the second floor, and we close at eight tonight."
NEAR_TEXT = "Thank you. Where can I find the children's books and the public computers, please?"


def _speech(text: str, voice: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """espeak-ng speech at 48 kHz looped to ``seconds``; a harmonic stand-in when espeak-ng is missing."""
    n = int(seconds * SAMPLE_RATE)
    if shutil.which("espeak-ng") and shutil.which("sox"):
        with tempfile.TemporaryDirectory() as tmp:
            wav, raw = Path(tmp) / "s.wav", Path(tmp) / "s.raw"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, timeout=30)
            subprocess.run(
                ["sox", str(wav), "-t", "raw", "-r", "48000", "-e", "signed", "-b", "16", "-c", "1", str(raw)],
                check=True,
                timeout=30,
            )
            pcm = np.fromfile(raw, dtype="<i2").astype(np.float64) / 32768
    else:
        t = np.arange(n) / SAMPLE_RATE
        pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        pcm = sum(np.sin(k * phase) / k for k in range(1, 12)) * (np.sin(2 * np.pi * 3 * t) > 0) * 0.3
    reps = int(np.ceil(n / len(pcm)))
    out: np.ndarray = np.tile(pcm, reps)[:n]
    return out / max(1e-9, np.max(np.abs(out))) * 0.5 + rng.normal(0, 1e-5, n)


def _room(far: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The echo at the mic: delay, a 250 ms exponentially decaying reverb tail, -6 dB coupling."""
    taps = int(0.25 * SAMPLE_RATE)
    impulse = rng.normal(0, 1, taps) * np.exp(-np.arange(taps) / (0.04 * SAMPLE_RATE))
    impulse[0] = 3.0
    impulse *= 0.5 / np.sqrt(np.sum(impulse**2))
    delayed = np.concatenate([np.zeros(int(ECHO_DELAY_S * SAMPLE_RATE)), far])[: len(far)]
    echo: np.ndarray = np.convolve(delayed, impulse)[: len(far)]
    return echo


def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _run(config: AudioConfig, far: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, float]:
    """Process the room frame by frame; return the output and CPU microseconds per frame."""
    processor = Processor(config)
    processor.set_latencies(REPORTED_LATENCY_S / 2, REPORTED_LATENCY_S / 2)
    vad = VoiceActivity(aggressiveness=3, onset_ms=120, offset_ms=600, wake_ms=400)
    far16, mic16 = _int16(far), _int16(mic)
    frames = len(mic16) // FRAME_SAMPLES
    out = np.zeros(frames * FRAME_SAMPLES, dtype=np.int16)
    start = time.process_time()
    for i in range(frames):
        s = slice(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        processor.reverse(far16[s])
        out[s] = processor.process(mic16[s])
        vad.push(out[s], i * 0.01)
    cpu_us = (time.process_time() - start) / frames * 1e6
    return out.astype(np.float64) / 32768, cpu_us


def _power(x: np.ndarray) -> float:
    return float(np.mean(x**2)) + 1e-20


def run(*, seconds: float = 12.0, seed: int = 1) -> dict[str, Any]:
    """Run the benchmark and return its figures (dB, microseconds) with goals and the baseline."""
    rng = np.random.default_rng(seed)
    seconds = max(seconds, CONVERGE_S + 1.0)
    far = _speech(FAR_TEXT, "en-us", seconds, rng)
    near = _speech(NEAR_TEXT, "en-gb", seconds, rng) * 0.7
    noise = rng.normal(0, 10 ** (-60 / 20), len(far))
    echo = _room(far, rng) + noise
    skip = int(CONVERGE_S * SAMPLE_RATE)
    full = AudioConfig()
    no_gate = AudioConfig(echo_gate_dbfs=GATE_OFF_DBFS)
    aec_only = AudioConfig(
        noise_suppression=False, high_pass_filter=False, auto_gain=False, echo_gate_dbfs=GATE_OFF_DBFS
    )
    off = AudioConfig(echo_cancellation=False, noise_suppression=False, high_pass_filter=False, auto_gain=False)

    def erle(config: AudioConfig) -> tuple[float, float]:
        out, cpu = _run(config, far, echo)
        n = len(out)
        return 10 * np.log10(_power(echo[skip:n]) / _power(out[skip:n])), cpu

    erle_full, cpu_full = erle(full)
    erle_apm, _ = erle(no_gate)
    erle_aec, _ = erle(aec_only)
    erle_off, cpu_off = erle(off)

    # Double talk: the near-end part of the output, found by projecting onto the same path's near-only output.
    silent = np.zeros_like(far)
    ref, _ = _run(full, silent, near + noise)
    talk, _ = _run(full, far, near + echo)
    n = min(len(ref), len(talk))
    active = np.repeat(
        np.abs(near[: n // FRAME_SAMPLES * FRAME_SAMPLES]).reshape(-1, FRAME_SAMPLES).max(1) > 0.05, FRAME_SAMPLES
    )
    active[:skip] = False
    r, d = ref[:n][active[:n]], talk[:n][active[:n]]
    gain = float(np.dot(d, r) / (np.dot(r, r) + 1e-20))
    loss = -20 * np.log10(max(abs(gain), 1e-6))
    return {
        "erle_db": round(float(erle_full), 1),
        "erle_apm_db": round(float(erle_apm), 1),
        "erle_aec_only_db": round(float(erle_aec), 1),
        "erle_baseline_db": round(float(erle_off), 1),
        "goal_erle_db": GOAL_ERLE_DB,
        "double_talk_loss_db": round(float(loss), 1),
        "goal_double_talk_loss_db": GOAL_DOUBLE_TALK_LOSS_DB,
        "us_per_frame": round(cpu_full, 1),
        "us_per_frame_baseline": round(cpu_off, 1),
        "cpu_ratio": round(cpu_full / max(cpu_off, 1e-9), 1),
        "seconds": seconds,
        "erle_ok": bool(erle_full >= GOAL_ERLE_DB),
        "double_talk_ok": bool(loss <= GOAL_DOUBLE_TALK_LOSS_DB),
    }


def report(result: dict[str, Any]) -> str:
    """The figures as lines with their goals."""

    def mark(ok: bool) -> str:
        return "meets goal" if ok else "MISSES goal"

    return "\n".join(
        [
            f"echo benchmark ({result['seconds']:.0f} s of synthetic room, echo delay {ECHO_DELAY_S * 1000:.0f} ms)",
            f"  ERLE, whole path (APM + gate):     {result['erle_db']:6.1f} dB   goal >= {GOAL_ERLE_DB:.0f} dB "
            f"({mark(result['erle_ok'])})",
            f"  ERLE, APM alone (AEC+NS+HPF+AGC):  {result['erle_apm_db']:6.1f} dB",
            f"  ERLE, AEC only (no gate):          {result['erle_aec_only_db']:6.1f} dB",
            f"  ERLE, processing off (baseline):   {result['erle_baseline_db']:6.1f} dB",
            f"  near-end loss in double talk:      {result['double_talk_loss_db']:6.1f} dB   goal <= "
            f"{GOAL_DOUBLE_TALK_LOSS_DB:.0f} dB ({mark(result['double_talk_ok'])})",
            f"  CPU per 10 ms frame:               {result['us_per_frame']:6.1f} us   baseline (off) "
            f"{result['us_per_frame_baseline']:.1f} us, x{result['cpu_ratio']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run and print the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (a few seconds of audio)")
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args(argv)
    print(report(run(seconds=3.5 if args.smoke else args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
