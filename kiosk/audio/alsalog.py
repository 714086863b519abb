"""ALSA's own error lines ("ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred") go to the debug log.

libasound prints them straight to stderr unless a handler is set with ``snd_lib_error_set_handler``; PortAudio calls
ALSA under the hood and recovers from what they report, so under systemd they would only fill the journal with
noise. The handler receives the message's printf format and arguments; the format, file, line and function are
logged at DEBUG (the variable arguments are not decoded: ctypes cannot read a C ``va_list`` portably).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: void handler(const char *file, int line, const char *function, int err, const char *fmt, ...)
_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
_installed: list[object] = []


def _log_alsa(file: bytes | None, line: int, function: bytes | None, err: int, fmt: bytes | None) -> None:
    def text(raw: bytes | None) -> str:
        return raw.decode(errors="replace") if raw else "?"

    log.debug("ALSA %s:%d (%s) %s%s", text(file), line, text(function), text(fmt), f" (error {err})" if err else "")


def route_alsa_errors_to_log() -> bool:
    """Install the handler once per process; False when libasound is not found (then nothing changes)."""
    if _installed:
        return True
    name = ctypes.util.find_library("asound")
    if name is None:
        return False
    try:
        lib = ctypes.CDLL(name)
        handler = _HANDLER(_log_alsa)
        lib.snd_lib_error_set_handler(handler)
    except (OSError, AttributeError):
        log.debug("could not set ALSA's error handler", exc_info=True)
        return False
    # The callback object must outlive every ALSA call: keep it for the life of the process.
    _installed.append(handler)
    return True
