"""Idle CPU, in-call CPU and memory: the daemon as ``python -m kiosk run`` with PulseAudio devices, measured alone.

CPU is the process's user + system time over wall time (% of one core), read from ``/proc/PID/stat``; memory is
its RSS from ``/proc/PID/statm``; file descriptors are counted in ``/proc/PID/fd``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import (
    Samples,
    Sandbox,
    cpu_percent_over,
    cpu_seconds,
    open_fds,
    rss_mb,
    write_wav,
)
from bench.daemon import KEY_ENV, daemon, playing
from bench.floor import PaceProbe, StreamSettings, speaker_pace
from bench.pulse import PulseAudio

SETTLE_S = 3.0


def speech_loop(speech48: Samples, seconds: float) -> Samples:
    """Speech, then a pause long enough for the agent to answer, repeated for ``seconds``."""
    pause = np.zeros(int(4.0 * 48000), np.int16)
    unit = np.concatenate([speech48, pause])
    return np.tile(unit, int(np.ceil(seconds * 48000 / len(unit))))


def in_call(*, sb: Sandbox, pulse: PulseAudio, workdir: Path, speech48: Samples, seconds: float) -> dict[str, float]:
    """CPU and RSS of one live session with speech both ways: the daemon, then the two baselines, MediaDevices and
    PlatformAudio, one after the other (always in that order), each over the same seconds of the same speech."""
    wav = write_wav(workdir / "talk.wav", speech_loop(speech48, seconds + 10))
    out: dict[str, float] = {}
    with daemon(sb=sb, pulse=pulse, workdir=workdir / "call", silence_s=60.0, voice_wake=False) as d:
        d.ask("press")
        d.wait_state("live")
        with playing(pulse, wav):
            time.sleep(1.0)
            probe = PaceProbe(pulse, StreamSettings.of(d.ask("status")), seconds)
            before, began = d.ask("status"), time.monotonic()
            out["cpu_call_pct"] = cpu_percent_over(d.pid, seconds)
            out.update(speaker_pace(before, d.ask("status"), time.monotonic() - began))
            out.update(probe.result())
            out["rss_call_mb"] = rss_mb(d.pid)
        turns = d.ask("status").get("turn_latency") or {}
        out["turns"] = float(turns.get("turns") or 0)
        out["turn_p50_ms"] = float(turns["p50_ms"]) if turns.get("p50_ms") is not None else float("nan")
        d.ask("press")
        d.wait_state("idle")
    baselines = (
        ("baseline", "mdcall", "the MediaDevices baseline"),
        ("platform", "platformcall", "the PlatformAudio baseline"),
    )
    for name, module, label in baselines:
        cpu, rss = baseline_call(
            sb=sb,
            pulse=pulse,
            workdir=workdir,
            wav=wav,
            seconds=seconds,
            module=module,
            label=label,
            # its exit status says whether WebRTC's ADM recorded the microphone and played to the speaker
            checked=module == "platformcall",
        )
        out[f"cpu_call_{name}_pct"], out[f"rss_call_{name}_mb"] = cpu, rss
    return out


def baseline_call(
    *,
    sb: Sandbox,
    pulse: PulseAudio,
    workdir: Path,
    wav: Path,
    seconds: float,
    module: str,
    label: str,
    checked: bool = False,
) -> tuple[float, float]:
    """CPU (%) and RSS (MB) of ``python -m bench.MODULE``, a baseline client in its own process, over ``seconds`` of
    a call with ``wav`` playing into the microphone; its stderr goes to ``MODULE.log``. With ``checked`` a failed
    exit raises."""
    env = {**pulse.env, KEY_ENV: sb.api_key, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    log_path = workdir / f"{module}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", f"bench.{module}", "--url", sb.http_url, "--seconds", str(seconds + 3)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if b"LIVE" not in line:
            raise RuntimeError(f"{label} did not go live; see {log_path}")
        with playing(pulse, wav):
            time.sleep(1.0)
            cpu = cpu_percent_over(process.pid, seconds)
            rss = rss_mb(process.pid)
        if process.wait(timeout=30) and checked:
            raise RuntimeError(f"{label} exited with status {process.returncode}; see {log_path}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    return cpu, rss


@dataclass
class Soak:
    """Readings over a soak of back-to-back sessions."""

    sessions: int = 0
    seconds: float = 0.0
    rss_mb: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    silence_ended: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    stuck: list[str] = field(default_factory=list)
    session_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    open_at_broker: int = 0
    not_ended: int = 0


def soak(
    *, sb: Sandbox, pulse: PulseAudio, workdir: Path, sessions: int, silence_s: float, silence_every: int = 10
) -> Soak:
    """``sessions`` back-to-back sessions (two warm-ups first); RSS and FDs after each.

    A session is a press, then a second press once live (every ``silence_every``-th one is left to end by silence
    instead, after the agent's greeting): short sessions keep the soak within the run's time budget.
    """
    result = Soak()
    soak_dir = workdir / "soak"
    with daemon(sb=sb, pulse=pulse, workdir=soak_dir, silence_s=silence_s, voice_wake=False, log_level="info") as d:
        for number in range(1, 3):
            d.ask("press")
            d.wait_state("idle", sessions=number)
        time.sleep(0.5)
        result.rss_mb.append(rss_mb(d.pid))
        result.fds.append(open_fds(d.pid))
        start, cpu0 = time.monotonic(), cpu_seconds(d.pid)
        for number in range(3, sessions + 3):
            began = time.monotonic()
            d.ask("press")
            try:
                if number % silence_every:
                    d.wait_state("live", sessions=number)
                    d.ask("press")
                else:
                    result.silence_ended += 1
                status = d.wait_state("idle", sessions=number)
            except TimeoutError as exc:
                # a failed session is a finding, not the end of the soak: note it and carry on once idle again
                result.stuck.append(f"session {number}: {exc}"[:400])
                status = d.wait_state("idle", within=60.0)
            result.session_s.append(round(time.monotonic() - began, 3))
            result.rss_mb.append(rss_mb(d.pid))
            result.fds.append(open_fds(d.pid))
        result.seconds = time.monotonic() - start
        result.cpu_s = cpu_seconds(d.pid) - cpu0
        result.sessions = sessions
        result.failures = {k: v for k, v in status.get("counters", {}).items() if k.startswith("failure")}
        time.sleep(2.0)
        result.rss_mb.append(rss_mb(d.pid))
        result.fds.append(open_fds(d.pid))
    time.sleep(1.0)
    records = [r for r in sb.sessions() if r["identity"] == "kiosk-bench"]
    result.open_at_broker = sum(1 for r in records if r["ended_at"] is None)
    result.not_ended = sum(1 for r in records if r["end_reason"] != "broker_end")
    return result
