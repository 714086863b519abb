"""The screen's view of the daemon: follows the control socket's ``events`` stream and reconnects when it drops.

:class:`ControlFeed` keeps what a page that connects now needs (the current view and the captions of the session on
screen) and fans every change out to the pages as ``{"event": name, "data": ...}`` messages:

- ``view``: a :class:`kiosk.screen.views.View` as JSON, whenever the state changes;
- ``caption``: one caption segment (interim updates replace the segment's text, ``final`` commits it);
- ``reset``: the captions on screen are gone (a new session started, or the kiosk is ready again).

Presses and typed text go back over the same socket, one request per connection (:meth:`ControlFeed.request`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kiosk.daemon.control_socket import EventBus
from kiosk.errors import ControlError
from kiosk.screen.views import DEFAULT_LABELS, View, caption_of, offline_view, view_of

log = logging.getLogger(__name__)

#: Caption segments kept for a page that connects mid-session; older ones leave the screen anyway.
MAX_SEGMENTS = 100
#: Longest caption text passed on to the page.
MAX_CAPTION_CHARS = 2000
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 2.0
REQUEST_TIMEOUT_S = 10.0
LINE_LIMIT = 256 * 1024


class ControlFeed:
    """Follows the daemon's events; ``run()`` until cancelled, reconnecting with a bounded back-off."""

    def __init__(
        self,
        *,
        socket: Path,
        labels: Mapping[str, str],
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.socket = socket
        self._labels = labels
        self._on_event = on_event
        self.bus = EventBus()
        self.view: View = offline_view(labels=labels)
        self.captions: dict[str, dict[str, Any]] = {}
        self.connected = asyncio.Event()

    def snapshot(self) -> dict[str, Any]:
        """Everything a newly connected page needs: the view and the captions on screen."""
        return {"view": self.view.as_json(), "captions": list(self.captions.values())}

    async def run(self) -> None:
        """Follow the daemon until cancelled; while it is away the pages show the offline view."""
        delay = RETRY_FIRST_S
        warned = False
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket), limit=LINE_LIMIT)
            except OSError as exc:
                level = logging.DEBUG if warned else logging.WARNING
                log.log(level, "no daemon on %s (%s); retrying every %.1f s at most", self.socket, exc, RETRY_MAX_S)
                warned = True
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            try:
                await self._follow(reader, writer)
                delay, warned = RETRY_FIRST_S, False
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                log.warning("lost the daemon's events on %s (%s); reconnecting", self.socket, exc)
            finally:
                self.connected.clear()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            self._show(offline_view(labels=self._labels))
            await asyncio.sleep(delay)

    async def _follow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"cmd": "events"}\n')
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S) or b"{}")
        if not answer.get("ok"):
            raise ValueError(f"the daemon refused the events stream: {answer.get('error', 'no answer')}")
        log.info("following the daemon's events on %s", self.socket)
        self.connected.set()
        while line := await reader.readline():
            event = json.loads(line)
            if isinstance(event, dict):
                self.handle(event)

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one daemon event: a state change or a caption update."""
        if event.get("type") == "state":
            try:
                view = view_of(event, labels=self._labels)
            except ValueError as exc:
                log.warning("%s: showing it as a failure", exc)
                view = View("failure", {**DEFAULT_LABELS, **self._labels}["failure"], "", None, False)
            self._show(view)
        elif event.get("type") == "caption":
            self._caption(event)
        if self._on_event is not None:
            self._on_event(event)

    def _show(self, view: View) -> None:
        old = self.view
        if view == old:
            return
        self.view = view
        new_session = view.in_session and view.session != old.session
        if self.captions and (view.key == "ready" or view.key == "offline" or new_session):
            # A visitor's conversation leaves the screen with them.
            self.captions.clear()
            self.bus.publish({"event": "reset", "data": {}})
        self.bus.publish({"event": "view", "data": view.as_json()})

    def _caption(self, event: Mapping[str, Any]) -> None:
        caption = caption_of(event)
        if caption is None or not self.view.in_session:
            return
        caption["text"] = caption["text"][:MAX_CAPTION_CHARS]
        segment = caption["segment_id"]
        if segment not in self.captions and len(self.captions) >= MAX_SEGMENTS:
            del self.captions[next(iter(self.captions))]
        self.captions[segment] = caption
        self.bus.publish({"event": "caption", "data": caption})

    async def request(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """One control request (``press`` or ``say``) and the daemon's answer.

        Raises:
            ControlError: the daemon is not there, or did not answer within 10 s.
        """
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(self.socket), limit=LINE_LIMIT)
                try:
                    writer.write(json.dumps(payload).encode() + b"\n")
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise ControlError(f"the kiosk daemon is not answering on {self.socket} ({exc})") from None
        try:
            answer = json.loads(line)
        except ValueError:
            raise ControlError(f"the daemon's answer on {self.socket} is not JSON") from None
        if not isinstance(answer, dict):
            raise ControlError(f"the daemon's answer on {self.socket} is not a JSON object")
        return answer
