"""ALSA's and PortAudio's own lines ("ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred", "Expression ...
failed in 'src/hostapi/alsa/pa_linux_alsa.c'") go to the debug log instead of stderr.

libasound prints them straight to stderr unless a handler is set with ``snd_lib_error_set_handler``; PortAudio calls
ALSA under the hood and recovers from what they report, so under systemd they would only fill the journal with
noise. The handler receives the message's printf format and arguments; the format, file, line and function are
logged at DEBUG (the variable arguments are not decoded: ctypes cannot read a C ``va_list`` portably). PortAudio
prints its failed assertions ("Expression ... failed") straight to file descriptor 2 where its build does not export
``PaUtil_SetDebugPrintFunction`` (Debian's does not): :func:`native_stderr_to_log` catches them around the calls
that print them (opening and starting a stream).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from collections.abc import Iterator

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


def unload_unused_alsa_plugins() -> bool:
    """Free ALSA's global configuration and unload the plugin modules no open PCM uses; False without libasound.

    PortAudio's device scan opens every PCM the ALSA configuration defines (``a52``, ``jack``, ``lavrate``,
    ``speex``, ``upmix`` ...), and libasound keeps each plugin module it loaded, with the libraries behind them
    (libavcodec and its codecs for ``a52``): about 11 MB of resident memory for the life of the daemon. alsa-lib's
    ``snd_config_update_free_global`` (``src/conf.c``) drops the configuration tree and closes cached plugin modules
    whose use count is zero; the next ``snd_pcm_open`` reads the configuration again. Call it from the thread that
    makes every PortAudio call, while no other thread is inside ALSA's configuration (after the scan).
    """
    name = ctypes.util.find_library("asound")
    if name is None:
        return False
    try:
        status = int(ctypes.CDLL(name).snd_config_update_free_global())
    except (OSError, AttributeError):
        log.debug("could not free ALSA's global configuration", exc_info=True)
        return False
    return status == 0


_fd_lock = threading.Lock()
#: The redirect under way: (the saved fd 2, the pipe's write end, Python's sys.stderr before it), or None.
_active: list[tuple[int, int, object]] = []


def _undo(saved: int, write_end: int, python_stderr: object) -> None:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(write_end)
    sys.stderr.close()
    sys.stderr = python_stderr


def abandon_native_stderr() -> None:
    """Give file descriptor 2 back now, from any thread: the call inside :func:`native_stderr_to_log` hung.

    Left redirected, every later log line written to stderr would go into a pipe nobody reads and, once its 64 KB
    fill, block the writer (the event loop); and the next redirect would wait for good on the lock.
    """
    if not _active:
        return
    saved, write_end, python_stderr = _active.pop()
    with contextlib.suppress(OSError, ValueError):
        _undo(saved, write_end, python_stderr)
    with contextlib.suppress(RuntimeError):
        _fd_lock.release()


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 inside the block to the debug log, line by line.

    Python's own ``sys.stderr`` keeps writing to the real stderr meanwhile. Meant for short calls that print a few
    lines at most (the pipe holds 64 KB; nothing reads it until the block ends). A call that hangs inside the block
    gives fd 2 back through :func:`abandon_native_stderr`; while a redirect is busy, another block runs without one.
    """
    if not _fd_lock.acquire(timeout=1.0):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        _fd_lock.release()
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    entry = (saved, write_end, sys.stderr)
    try:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, closefd=True)
        os.dup2(write_end, 2)
        _active.append(entry)
        yield
    finally:
        if entry in _active:  # not abandoned meanwhile
            _active.remove(entry)
            _undo(*entry)
            _fd_lock.release()
        chunks = []
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        os.close(read_end)
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        if line.strip():
            log.debug("native: %s", line)
