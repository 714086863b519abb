"""The daemon under measurement: ``python -m kiosk run`` on the private PulseAudio devices (:mod:`bench.pulse`),
asked over its control socket, and a recording played into its microphone meanwhile."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Sandbox, kiosk_config, stop
from bench.pulse import MIC_PCM, SPK_PCM, PulseAudio
from kiosk.commands.control import request_once

#: The environment variable the daemon's config names for the sandbox broker's key.
KEY_ENV = "KIOSK_BENCH_BROKER_KEY"


@dataclass
class Daemon:
    """A ``kiosk run`` subprocess."""

    process: subprocess.Popen[bytes]
    socket: Path

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    def ask(self, cmd: str) -> dict[str, Any]:
        """One control-socket request."""
        return request_once(self.socket, {"cmd": cmd}, timeout=10)

    def wait_state(
        self, state: str, within: float = 20.0, *, sessions: int | None = None, step: float = 0.02
    ) -> dict[str, Any]:
        """Poll ``status`` every ``step`` s until the daemon is in ``state`` (and has run ``sessions`` sessions, if
        given)."""
        deadline = time.monotonic() + within
        while True:
            status = self.ask("status")
            count = status.get("counters", {}).get("sessions", 0)
            if status.get("state") == state and (sessions is None or count >= sessions):
                return status
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError(f"daemon not {state} within {within} s: {status}")
            time.sleep(step)


@contextlib.contextmanager
def daemon(
    *,
    sb: Sandbox,
    pulse: PulseAudio,
    workdir: Path,
    silence_s: float,
    voice_wake: bool,
    log_level: str = "warning",
    audio: str = "",
    prefix: Sequence[str] = (),
) -> Iterator[Daemon]:
    """Run ``python -m kiosk run`` on the PulseAudio devices until the block ends (SIGTERM, then SIGKILL);
    ``audio`` holds more ``[audio]`` settings (TOML lines); ``prefix`` goes before the command (e.g. nsenter)."""
    workdir.mkdir(parents=True, exist_ok=True)
    extra = (
        f'[audio]\ninput_device = "{MIC_PCM}"\noutput_device = "{SPK_PCM}"\n{audio}\n'
        f"[trigger]\nvoice_wake = {'true' if voice_wake else 'false'}\n"
    )
    config = kiosk_config(
        sb=sb, workdir=workdir, key_env=KEY_ENV, silence_s=silence_s, log_level=log_level, extra=extra
    )
    env = {**pulse.env, KEY_ENV: sb.api_key}
    with (workdir / "daemon.log").open("w") as log:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "kiosk", "run", "--config", str(config)], env=env, stdout=log, stderr=log
        )
    handle = Daemon(process=process, socket=workdir / "control.sock")
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, ValueError, Exception):
                if handle.ask("status").get("state") == "idle":
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the daemon did not start; see {workdir / 'daemon.log'}")
            time.sleep(0.1)
        yield handle
    finally:
        stop(process, 10)


@contextlib.contextmanager
def playing(pulse: PulseAudio, wav: Path) -> Iterator[None]:
    """Play ``wav`` into the microphone sink for the duration of the block."""
    player = pulse.play(wav)
    try:
        yield
    finally:
        player.terminate()
        player.wait(timeout=5)
