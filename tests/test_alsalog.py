"""ALSA's error lines go to the debug log instead of stderr once the handler is installed."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import ctypes, ctypes.util, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
from kiosk.audio.alsalog import route_alsa_errors_to_log
if sys.argv[1] == "on":
    assert route_alsa_errors_to_log()
lib = ctypes.CDLL(ctypes.util.find_library("asound"))
pcm = ctypes.c_void_p()
assert lib.snd_pcm_open(ctypes.byref(pcm), b"kiosk_no_such_pcm", 0, 0) < 0
"""


def _run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=True)


def test_alsa_errors_reach_the_debug_log_not_stderr() -> None:
    """Opening a PCM that does not exist: ALSA prints on stderr by default, into the log with the handler."""
    plain = _run("off")
    assert "ALSA lib" in plain.stderr and "kiosk_no_such_pcm" in plain.stderr
    routed = _run("on")
    assert routed.stderr == ""
    assert "kiosk.audio.alsalog ALSA" in routed.stdout and "Unknown PCM" in routed.stdout


NATIVE = """
import logging, os, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
from kiosk.audio.alsalog import native_stderr_to_log
with native_stderr_to_log():
    os.write(2, b"Expression 'r' failed in 'pa_linux_alsa.c'\\n")
    print("python's own line", file=sys.stderr)
os.write(2, b"after the block\\n")
"""


def test_native_stderr_inside_the_block_goes_to_the_debug_log() -> None:
    """Native writes to fd 2 inside the block reach the log; Python's stderr and later writes stay on stderr."""
    done = subprocess.run([sys.executable, "-c", NATIVE], capture_output=True, text=True, timeout=60, check=True)
    assert "Expression" not in done.stderr
    assert "python's own line" in done.stderr and "after the block" in done.stderr
    assert "kiosk.audio.alsalog native: Expression 'r' failed in 'pa_linux_alsa.c'" in done.stdout
