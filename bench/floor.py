"""The idle floor measured beside the daemon: two bare PortAudio streams opened with the daemon's own settings.

The floor process opens the same PulseAudio PCMs at the rate, channel count, block size (10 ms) and latency
(``"low"``) the daemon reports in ``kiosk status``, with callbacks that do nothing (the output fills silence). Both
processes run at once and are read over the same windows, so machine load moves both alike; each window gives a
ratio and the figure is the median of those ratios.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Sandbox, cpu_seconds, pink_noise, rss_mb, write_wav
from bench.daemon import daemon, playing
from bench.pulse import MIC_PCM, SPK_PCM, PulseAudio

#: Room noise at the microphone while idle (dBFS RMS): a quiet lobby.
NOISE_DBFS = -50.0
SETTLE_S = 3.0
#: Windows per measurement; the ratio reported is their median.
WINDOWS = 5

_FLOOR = """
import sys, time, sounddevice as sd
mic, spk, rate_in, ch_in, rate_out, ch_out = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
def find(name, kind):
    return next(i for i, d in enumerate(sd.query_devices()) if name in d['name'] and d[kind] > 0)
i = sd.InputStream(device=find(mic, 'max_input_channels'), samplerate=rate_in, channels=ch_in, dtype='int16',
                   blocksize=rate_in // 100, latency='low', callback=lambda *a: None)
o = sd.OutputStream(device=find(spk, 'max_output_channels'), samplerate=rate_out, channels=ch_out, dtype='int16',
                    blocksize=rate_out // 100, latency='low', callback=lambda out, *a: out.fill(0))
i.start(); o.start(); print('OPEN', flush=True); time.sleep(float(sys.argv[7]))
"""


#: A second floor: one 16 kHz mono input stream in 30 ms blocks, each judged by webrtcvad (what a
#: minimal voice-activated listener holds while idle).
_VAD_FLOOR = """
import sys, time, sounddevice as sd, webrtcvad
mic, seconds = sys.argv[1], float(sys.argv[2])
vad = webrtcvad.Vad(2)
def callback(data, frames, when, status):
    vad.is_speech(bytes(data), 16000)
index = next(i for i, d in enumerate(sd.query_devices()) if mic in d['name'] and d['max_input_channels'] > 0)
with sd.RawInputStream(device=index, samplerate=16000, channels=1, dtype='int16', blocksize=480, callback=callback):
    print('OPEN', flush=True)
    time.sleep(seconds)
"""


_PACE = """
import sys, time, sounddevice as sd
spk, rate, channels, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
counts = [0, 0]
def callback(out, frames, when, status):
    counts[0] += 1
    counts[1] += bool(status.output_underflow)
    out.fill(0)
index = next(i for i, d in enumerate(sd.query_devices()) if spk in d['name'] and d['max_output_channels'] > 0)
with sd.OutputStream(device=index, samplerate=rate, channels=channels, dtype='int16', blocksize=rate // 100,
                     latency='low', callback=callback):
    time.sleep(0.5)
    blocks, underruns, began = counts[0], counts[1], time.monotonic()
    print('OPEN', flush=True)
    time.sleep(seconds)
    print(counts[0] - blocks, counts[1] - underruns, time.monotonic() - began, flush=True)
"""


@dataclass(frozen=True)
class StreamSettings:
    """How the daemon opened its two streams (from ``kiosk status``)."""

    input_rate: int
    input_channels: int
    output_rate: int
    output_channels: int

    @classmethod
    def of(cls, status: dict[str, Any]) -> StreamSettings:
        """Read them from a ``status`` answer's ``audio`` part."""
        audio = status["audio"]
        return cls(
            int(audio["input"]["samplerate"]),
            int(audio["input"]["channels"]),
            int(audio["output"]["samplerate"]),
            int(audio["output"]["channels"]),
        )


@contextlib.contextmanager
def _floor_process(pulse: PulseAudio, script: str, args: list[str], what: str) -> Iterator[int]:
    """Run ``script`` with ``args`` on the private PulseAudio until the block ends; yields its pid once it printed
    OPEN (its streams run). Raises RuntimeError naming ``what`` when it does not."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], env=pulse.env, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        if b"OPEN" not in process.stdout.readline():
            raise RuntimeError(f"{what} did not open its streams")
        yield process.pid
    finally:
        process.kill()
        process.wait(timeout=5)


def bare_streams(pulse: PulseAudio, settings: StreamSettings, seconds: float) -> contextlib.AbstractContextManager[int]:
    """A process holding the two streams with ``settings`` for up to ``seconds``; yields its pid once open."""
    args = [
        MIC_PCM,
        SPK_PCM,
        *(str(v) for v in (settings.input_rate, settings.input_channels)),
        *(str(v) for v in (settings.output_rate, settings.output_channels)),
        str(seconds),
    ]
    return _floor_process(pulse, _FLOOR, args, "the floor process")


def vad_listener(pulse: PulseAudio, seconds: float) -> contextlib.AbstractContextManager[int]:
    """A process holding one 16 kHz, 30 ms input stream with webrtcvad for up to ``seconds``; yields its pid."""
    return _floor_process(pulse, _VAD_FLOOR, [MIC_PCM, str(seconds)], "the 16 kHz VAD listener")


def paired_cpu(pids: dict[str, int], seconds: float, windows: int = WINDOWS) -> dict[str, list[float]]:
    """CPU (% of one core) of each named process over the same ``windows`` consecutive windows of ``seconds``."""
    out: dict[str, list[float]] = {name: [] for name in pids}
    per = seconds / windows
    for _ in range(windows):
        wall0, cpu0 = time.monotonic(), {name: cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(per)
        wall1 = time.monotonic()
        for name, pid in pids.items():
            out[name].append(100.0 * (cpu_seconds(pid) - cpu0[name]) / (wall1 - wall0))
    return out


def median_ratio(values: list[float], baseline: list[float]) -> float | None:
    """The median of the per-window ratios ``values[i] / baseline[i]``."""
    ratios = [v / b for v, b in zip(values, baseline, strict=True) if b > 0]
    return statistics.median(ratios) if ratios else None


def idle_vs_floor(*, sb: Sandbox, pulse: PulseAudio, workdir: Path, seconds: float) -> dict[str, Any]:
    """Idle CPU with voice wake on and off beside the floor with the daemon's settings; idle RSS."""
    noise = write_wav(workdir / "noise.wav", pink_noise(2 * seconds + 4 * SETTLE_S + 10, dbfs=NOISE_DBFS))
    out: dict[str, Any] = {}
    with playing(pulse, noise):
        for wake in (True, False):
            name = "on" if wake else "off"
            with daemon(sb=sb, pulse=pulse, workdir=workdir / f"idle-{name}", silence_s=1.0, voice_wake=wake) as d:
                settings = StreamSettings.of(d.ask("status"))
                with (
                    bare_streams(pulse, settings, seconds + 2 * SETTLE_S) as floor,
                    vad_listener(pulse, seconds + 2 * SETTLE_S) as vad,
                ):
                    time.sleep(SETTLE_S)
                    cpu = paired_cpu({"kiosk": d.pid, "floor": floor, "vad": vad}, seconds)
                out[f"cpu_wake_{name}_pct"] = statistics.median(cpu["kiosk"])
                out[f"cpu_floor_wake_{name}_pct"] = statistics.median(cpu["floor"])
                out[f"ratio_wake_{name}"] = median_ratio(cpu["kiosk"], cpu["floor"])
                out[f"cpu_vad_floor_wake_{name}_pct"] = statistics.median(cpu["vad"])
                out[f"ratio_vad_wake_{name}"] = median_ratio(cpu["kiosk"], cpu["vad"])
                out[f"windows_wake_{name}"] = cpu
                out[f"rss_idle_wake_{name}_mb"] = rss_mb(d.pid)
                out[f"settings_wake_{name}"] = settings.__dict__
                status = d.ask("status")
                if status.get("counters", {}).get("sessions", 0):
                    raise RuntimeError("room noise woke the kiosk: the idle figure would include a session")
    out["cpu_bare_streams_pct"] = statistics.median([out["cpu_floor_wake_on_pct"], out["cpu_floor_wake_off_pct"]])
    return out


def speaker_pace(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """Output blocks per second, device underruns and starved blocks between two ``status`` answers ``seconds``
    apart."""
    b, a = before["audio"], after["audio"]
    rate = int(a["output"]["samplerate"])
    blocks = int(a["output"]["blocks"]) - int(b["output"]["blocks"])
    return {
        "speaker_blocks_per_s": blocks / seconds,
        # One block is 10 ms: real time is rate / (rate // 100) = 100 blocks per second.
        "speaker_real_time_pct": 100.0 * blocks / (seconds * rate / (rate // 100)),
        "speaker_underruns": float(int(a["output_underruns"]) - int(b["output_underruns"])),
        "speaker_starved": float(int(a["output_starved_blocks"]) - int(b["output_starved_blocks"])),
    }


class PaceProbe:
    """A bare output stream with the daemon's settings beside it, counting its own callbacks: how fast the device
    itself pulls blocks on this machine right now (a PulseAudio null sink under load pulls fewer than 100 a second)."""

    def __init__(self, pulse: PulseAudio, settings: StreamSettings, seconds: float) -> None:
        args = [SPK_PCM, str(settings.output_rate), str(settings.output_channels), str(seconds)]
        self._process = subprocess.Popen(
            [sys.executable, "-c", _PACE, *args], env=pulse.env, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        if "OPEN" not in self._process.stdout.readline():
            self._process.kill()
            raise RuntimeError("the pace probe did not open its stream")

    def result(self) -> dict[str, float]:
        """Blocks per second and PortAudio output underflows (device underruns) over its window (waits for it to end)."""
        assert self._process.stdout is not None
        blocks, underruns, elapsed = self._process.stdout.readline().split()
        self._process.wait(timeout=10)
        return {"probe_blocks_per_s": int(blocks) / float(elapsed), "probe_underruns": float(underruns)}
