"""One daemon thread for blocking PortAudio calls, so none of them runs on the event loop.

PortAudio's API is not thread-safe, so the calls run one at a time, in order. A call can block for good (ALSA's
PulseAudio plugin waits forever to start a stream on a sink that vanished): the thread is a daemon thread, so a
stuck call never keeps the process from exiting, and callers bound their waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
#: Set once a PortAudio call was left stuck (a device that hangs). PortAudio's own exit handler would then wait on
#: it or crash the process, so the process must end without running exit handlers (see ``kiosk run``).
STUCK = threading.Event()

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class PortAudioThread:
    """Runs submitted calls in order on one daemon thread; results come back as asyncio futures."""

    def __init__(self, name: str = "portaudio") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """Run ``call(*args)`` on the thread and return its result (or raise its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, call, args))
        return await future

    def stop(self) -> None:
        """Let the thread end after the calls already submitted (it does not wait for a stuck one)."""
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, call, args = job
            try:
                result = call(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller, whatever it is
                _hand(loop, future, None, exc)
            else:
                _hand(loop, future, result, None)


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
