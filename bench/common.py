"""Shared helpers of the benchmarks: figures with goals, statistics, /proc readings, speech, the sandbox."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import numpy.typing as npt

from kiosk.demo.runner import SandboxProcess, start_sandbox

Samples = npt.NDArray[np.int16]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
RATE = 48000


@dataclasses.dataclass
class Figure:
    """One line of the results table: a measured value, its goal and whether it is met (None: no goal)."""

    name: str
    value: float | None
    unit: str
    goal: str = ""
    ok: bool | None = None
    baseline: float | None = None
    note: str = ""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, or None when there are none."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


def rounded(value: float | None, digits: int = 1) -> float | None:
    """``value`` rounded, keeping None."""
    return None if value is None else round(float(value), digits)


# ---- /proc --------------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its threads included, children excluded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (10^6 bytes)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE / 1e6


def open_fds(pid: int) -> int:
    """Number of open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    """Number of threads of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/task"))


def cpu_percent_over(pid: int, seconds: float) -> float:
    """Percent of one core ``pid`` used during the next ``seconds`` (CPU time / wall time)."""
    wall0, cpu0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    wall1, cpu1 = time.monotonic(), cpu_seconds(pid)
    return 100.0 * (cpu1 - cpu0) / (wall1 - wall0)


def stop(process: subprocess.Popen[Any], within: float) -> None:
    """SIGTERM ``process``, wait up to ``within`` seconds, then kill it."""
    process.terminate()
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# ---- audio files --------------------------------------------------------------------------------------------------


def write_wav(path: Path, samples: Samples, rate: int = RATE) -> Path:
    """Write mono int16 ``samples`` as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[Samples, int]:
    """Read a mono int16 WAV file."""
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16), wav.getframerate()


def speech(text: str, workdir: Path, *, rate: int = RATE, voice: str = "en-us", wpm: int = 165) -> Samples:
    """``text`` spoken by espeak-ng as mono int16 at ``rate``, peak at -6 dBFS."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise RuntimeError("the benchmarks need espeak-ng and sox")
    wav, raw = workdir / "speech.wav", workdir / "speech.raw"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), text], check=True, timeout=30)
    subprocess.run(
        ["sox", str(wav), "-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1", str(raw)],
        check=True,
        timeout=30,
    )
    pcm = np.fromfile(raw, dtype="<i2").astype(np.float64)
    voiced = np.flatnonzero(np.abs(pcm) > 300)
    pcm = pcm[voiced[0] : voiced[-1] + 1] if len(voiced) else pcm
    return (pcm / max(1.0, float(np.abs(pcm).max())) * 16000).astype(np.int16)


def pink_noise(seconds: float, *, dbfs: float, rate: int = RATE, seed: int = 7) -> Samples:
    """Pink (1/f) noise at an RMS of ``dbfs``: a room's ventilation and distant voices."""
    n = int(seconds * rate)
    spectrum = np.fft.rfft(np.random.default_rng(seed).normal(0, 1, n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    noise *= 10 ** (dbfs / 20) * 32768 / np.sqrt(np.mean(noise**2))
    return np.clip(noise, -32768, 32767).astype(np.int16)


# ---- the sandbox --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sandbox:
    """A sandbox subprocess and a client for its session list."""

    process: SandboxProcess
    http_url: str
    ws_url: str
    api_key: str

    def sessions(self) -> list[dict[str, Any]]:
        """Every session record, oldest first."""
        response = httpx.get(f"{self.http_url}/sandbox/sessions", timeout=5)
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()["sessions"]
        return records

    def session(self, room: str) -> dict[str, Any] | None:
        """The record of ``room``, if any."""
        matches = [s for s in self.sessions() if s["room"] == room]
        return matches[-1] if matches else None

    def wait_session(
        self, room: str, predicate: Callable[[dict[str, Any]], bool], within: float = 10.0
    ) -> dict[str, Any]:
        """Poll the record of ``room`` until ``predicate`` holds (TimeoutError after ``within`` s)."""
        deadline = time.monotonic() + within
        while True:
            record = self.session(room)
            if record is not None and predicate(record):
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {room}: condition not met within {within} s: {record}")
            time.sleep(0.02)

    def open_sessions(self) -> int:
        """How many sessions the broker still has open."""
        return sum(1 for s in self.sessions() if s["ended_at"] is None)


@contextlib.contextmanager
def sandbox(workdir: Path, api_key: str, *, agent: str = "scripted") -> Iterator[Sandbox]:
    """Run a sandbox subprocess (``--agent AGENT``) for the duration of the block (its log in ``workdir``)."""
    log: IO[str] = (workdir / f"sandbox-{agent}.log").open("w")
    process = start_sandbox(api_key=api_key, log=log, agent=agent)
    try:
        info = process.info
        yield Sandbox(process=process, http_url=info["http_url"], ws_url=info["ws_url"], api_key=info["api_key"])
    finally:
        process.stop()
        log.close()
        shutil.rmtree(process.info.get("state_dir", ""), ignore_errors=True)


def kiosk_config(
    *,
    sb: Sandbox,
    workdir: Path,
    key_env: str,
    silence_s: float,
    agent_join_s: float = 10.0,
    identity: str = "kiosk-bench",
    log_level: str = "warning",
    extra: str = "",
) -> Path:
    """Write a kiosk.toml for the lyzr dialect against ``sb``; returns its path.

    ``audio.digital_silence_s`` is off unless ``extra`` sets it: the benchmarks' WAV and null-sink microphones are
    exact zeros between utterances, which a real microphone never is.
    """
    if "digital_silence_s" not in extra:
        setting = "digital_silence_s = 0\n"
        extra = (
            extra.replace("[audio]\n", "[audio]\n" + setting, 1)
            if "[audio]\n" in extra
            else f"{extra}\n[audio]\n{setting}"
        )
    text = (
        f'[device]\nidentity = "{identity}"\n\n'
        f'[broker]\ndialect = "lyzr"\nurl = "{sb.http_url}"\nagent_id = "bench-agent"\napi_key_env = "{key_env}"\n\n'
        f"[session]\nsilence_timeout_s = {silence_s}\nagent_join_timeout_s = {agent_join_s}\nconnect_timeout_s = 10.0\n"
        "error_display_s = 1.0\nlog_transcript = false\n\n"
        f'[control]\nsocket = "{workdir / "control.sock"}"\n\n'
        f'[daemon]\nstate_dir = "{workdir / "state"}"\nlog_level = "{log_level}"\n\n{extra}'
    )
    path = workdir / "kiosk.toml"
    path.write_text(text)
    return path
