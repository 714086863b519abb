"""A private headless PulseAudio with null sinks ``mic`` and ``spk``, and ALSA PCMs that reach it.

The daemon records ``mic.monitor`` through the ALSA PCM ``kiosk_pulse_mic`` and plays to ``spk`` through
``kiosk_pulse_spk``; the benchmark plays room noise or speech into ``mic`` with ``paplay``. Child processes get
:attr:`PulseAudio.env`, which points ``XDG_CONFIG_HOME`` at an asoundrc defining the two PCMs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import stop

MIC_PCM = "kiosk_pulse_mic"
SPK_PCM = "kiosk_pulse_spk"


@dataclass
class PulseAudio:
    """A running private PulseAudio server."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]

    def pactl(self, *args: str) -> str:
        """Run pactl against this server."""
        done = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout

    def play(self, wav: Path, sink: str = "mic", *, latency_ms: int | None = None) -> subprocess.Popen[bytes]:
        """Start playing ``wav`` into ``sink`` in real time (terminate the process to stop). ``latency_ms``: ask for
        that little buffering, for speech that must reach the microphone from its first moment (with paplay's
        default buffer the null sink renders in 2 s blocks: the first words would arrive up to 2 s late)."""
        latency = [f"--latency-msec={latency_ms}"] if latency_ms is not None else []
        return subprocess.Popen(["paplay", *latency, "-d", sink, str(wav)], env=self.env)


@contextlib.contextmanager
def pulseaudio() -> Iterator[PulseAudio]:
    """Start a private PulseAudio for the block; stop it afterwards."""
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        raise RuntimeError("the benchmarks need pulseaudio and pulseaudio-utils")
    root = Path(tempfile.mkdtemp(prefix="kiosk-bench-pulse-"))
    runtime, socket = root / "run", root / "run" / "native"
    runtime.mkdir()
    (root / "config" / "alsa").mkdir(parents=True)
    (root / "config" / "alsa" / "asoundrc").write_text(
        f'pcm.{MIC_PCM} {{ type pulse; server "unix:{socket}"; device "mic.monitor" }}\n'
        f'pcm.{SPK_PCM} {{ type pulse; server "unix:{socket}"; device "spk" }}\n'
    )
    script = runtime / "bench.pa"
    script.write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}\n"
        "load-module module-null-sink sink_name=mic rate=48000 channels=1\n"
        "load-module module-null-sink sink_name=spk rate=48000 channels=1\n"
    )
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(runtime),
        "PULSE_SERVER": f"unix:{socket}",
        "XDG_CONFIG_HOME": str(root / "config"),
    }
    log = (root / "pulseaudio.log").open("wb")
    process = subprocess.Popen(
        ["pulseaudio", "-n", "-F", str(script), "--exit-idle-time=-1", "--daemonize=no", "--disable-shm=yes"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PulseAudio(process=process, env=env)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(subprocess.CalledProcessError):
                if "spk" in server.pactl("list", "short", "sinks"):
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"pulseaudio did not start; see {root / 'pulseaudio.log'}")
            time.sleep(0.1)
        yield server
    finally:
        stop(process, 5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
