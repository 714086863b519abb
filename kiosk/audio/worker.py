"""One thread at a time for blocking PortAudio calls, so none of them runs on the event loop, and none can hang it.

PortAudio's API is not thread-safe, so the calls run one at a time, in order. A call can block for good: ALSA's
PulseAudio plugin may "open" a stream on a sink that vanished, and then ``Pa_StartStream`` never returns (its callback
thread holds the stream's mutex while the plugin waits on the server; seen 1 start in 4-6 with the sink missing).
Such a call is *abandoned* after its bound (:class:`CallTimeout`): the thread stuck in it is left behind and a fresh
thread takes the calls that follow, so later reopen attempts still run.

What a hung call leaves behind, found on PortAudio 19.6 / alsa-plugins 1.2.7 (``tests/test_audio_hang.py``):

- no PortAudio-wide lock is held: device queries, and opening, starting and closing *other* streams, still work;
- the stuck stream can never be touched again: ``Pa_AbortStream`` / ``Pa_CloseStream`` on it, or ``Pa_Terminate``
  (which closes every open stream: a device rescan), fail PortAudio's assertion on the held mutex and abort the
  process. So a hung stream is kept referenced and never closed, rescans stop (see :func:`hung_calls`), and at exit
  the process skips its exit handlers (:data:`STUCK`, ``kiosk run``);
- the call does not return when the device comes back; if it ever returns, ``on_late`` cleans up on that thread.

Opening a PCM whose PulseAudio sink is missing also crashes the process now and then (SIGSEGV inside
``Pa_OpenStream``, in native code: about once in 50-200 opens here). Nothing in Python can catch that; the reopen
backoff (``audio.reopen_backoff_max_s``) keeps such opens to a few a minute, and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
#: Set once a PortAudio call was left stuck (a device that hangs). PortAudio's own exit handler would then wait on
#: it or crash the process, so the process must end without running exit handlers (see ``kiosk run``).
STUCK = threading.Event()
#: What was abandoned, oldest first: ``"start output device 'x'"``; read it with :func:`hung_calls`.
_HUNG: list[str] = []

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], "_Late"]


class CallTimeout(TimeoutError):
    """A PortAudio call did not return within its bound and was abandoned on its thread."""


class _Late:
    """What to do with the result of a call that returns after it was abandoned."""

    def __init__(self, on_late: Callable[[Any], object] | None) -> None:
        self.on_late = on_late
        self.abandoned = False


def hung_calls() -> list[str]:
    """The PortAudio calls this process abandoned (empty while none hung); a rescan is unsafe while any is listed."""
    return list(_HUNG)


class PortAudioThread:
    """Runs submitted calls in order on one daemon thread at a time; results come back as asyncio futures."""

    def __init__(self, name: str = "portaudio") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._current = self._spawn()

    def _spawn(self) -> threading.Thread:
        thread = threading.Thread(target=self._work, name=self._name, daemon=True)
        self._current = thread
        thread.start()
        return thread

    async def run(
        self,
        call: Callable[..., T],
        *args: Any,
        timeout_s: float | None = None,
        what: str = "",
        on_late: Callable[[T], object] | None = None,
    ) -> T:
        """Run ``call(*args)`` on the thread and return its result (or raise its exception).

        Raises:
            CallTimeout: ``timeout_s`` passed first; the call is abandoned (``what`` names it in
                :func:`hung_calls`), a new thread runs the calls after it, and ``on_late(result)`` runs on the old
                thread should the call ever return.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        late = _Late(on_late)
        self._jobs.put((loop, future, call, args, late))
        if timeout_s is None:
            return await future
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout_s)
        except asyncio.CancelledError:
            future.cancel()  # nobody waits for it now: its result is dropped
            raise
        if done:
            return future.result()
        name = what or getattr(call, "__name__", "a PortAudio call")
        self._abandon(late, name, timeout_s)
        future.cancel()
        raise CallTimeout(f"{name} did not return within {timeout_s:g} s")

    def _abandon(self, late: _Late, what: str, timeout_s: float) -> None:
        with self._lock:
            late.abandoned = True
            _HUNG.append(f"{what} (stuck since {time.strftime('%H:%M:%S')}, bound {timeout_s:g} s)")
            STUCK.set()
            # The stuck thread leaves once (if ever) its call returns; this one takes every later job.
            self._spawn()
        from kiosk.audio.alsalog import abandon_native_stderr

        abandon_native_stderr()

    def stop(self) -> None:
        """Let the thread end after the calls already submitted (it does not wait for a stuck one)."""
        self._jobs.put(None)

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._current is not me:
                    return
            job = self._jobs.get()
            if job is None:
                return
            loop, future, call, args, late = job
            try:
                result = call(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller, whatever it is
                with self._lock:
                    if not late.abandoned:
                        _hand(loop, future, None, exc)
                continue
            with self._lock:
                abandoned = late.abandoned
            if not abandoned:
                _hand(loop, future, result, None)
            elif late.on_late is not None:
                with contextlib.suppress(Exception):
                    late.on_late(result)


def _hand(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    # A closed loop raises RuntimeError: nobody waits for this result any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)
