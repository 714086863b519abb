"""What every ``kiosk test`` check shares (:mod:`kiosk.commands.hwtest` and the checks it runs): its exit
statuses, :class:`CheckFailed`, the terminal/JSON :class:`Printer`, :func:`run_async` and :func:`pin_config`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kiosk.config import LedConfig, TriggerConfig

EXIT_PROBLEM = 1
EXIT_BUSY = 75
T = TypeVar("T")


class CheckFailed(Exception):
    """The check cannot go on: the command prints the message to stderr and exits with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def run_async(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run ``main(stop)`` on a new loop; Ctrl-C sets ``stop`` so the check ends with its summary."""

    async def wrapper() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            loop.add_signal_handler(signal.SIGINT, stop.set)
        return await main(stop)

    return asyncio.run(wrapper())


def pin_config(config: LedConfig | TriggerConfig, **update: Any) -> Any:
    """A config section with ``update`` applied (validated like the file)."""
    return type(config).model_validate({**config.model_dump(), **update})


class Printer:
    """Text for people, JSON lines for machines; every line is flushed (a live meter over SSH)."""

    def __init__(self, *, as_json: bool, stream: Any = None) -> None:
        self.as_json = as_json
        self._stream = stream or sys.stdout
        self.tty = bool(getattr(self._stream, "isatty", lambda: False)())

    def text(self, line: str) -> None:
        """A line for people (skipped with --json)."""
        if not self.as_json:
            self._stream.write(line + "\n")
            self._stream.flush()

    def live(self, line: str, *, keep: bool) -> None:
        """A meter line: redrawn in place on a terminal, kept when ``keep`` (and always when piped)."""
        if self.as_json:
            return
        if self.tty:
            self._stream.write("\r\x1b[K" + line + ("\n" if keep else ""))
            self._stream.flush()
        elif keep:
            self.text(line)

    def data(self, kind: str, value: Any) -> None:
        """A JSON line ``{"kind": ..., **value}`` (only with --json)."""
        if self.as_json:
            body = (
                dataclasses.asdict(value)
                if dataclasses.is_dataclass(value) and not isinstance(value, type)
                else dict(value)
            )
            self._stream.write(json.dumps({"kind": kind, **body}) + "\n")
            self._stream.flush()
