"""What the control socket asks of the running daemon (:class:`kiosk.daemon.control_socket.Controller`).

``status`` gathers ``kiosk status``; ``press`` and ``say`` are an installer's requests, passed on to the policy (a
press is refused while the microphone is missing) and to the live session.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable
from typing import Any, Protocol

from kiosk import __version__
from kiosk import session as sm
from kiosk.audio import AudioEngine
from kiosk.daemon.policy import microphone_missing
from kiosk.daemon.session_driver import SessionDriver
from kiosk.daemon.volume_mute import DeviceControls


class Listening(Protocol):
    """Where the metrics are served (``host:port``), once they are."""

    @property
    def address(self) -> str | None:
        """``host:port``, or None before the listener is up (or with no listener)."""
        ...


class DaemonController:
    """Answers ``kiosk status``, ``kiosk press`` and ``kiosk say`` from the driver, the audio engine and the policy."""

    def __init__(
        self,
        *,
        driver: SessionDriver,
        audio: AudioEngine,
        press: Callable[[sm.Source], None],
        controls: DeviceControls,
        metrics: Listening,
    ) -> None:
        """``press(source)`` carries out a press (the daemon's policy); ``metrics`` names the metrics address."""
        self._driver = driver
        self._audio = audio
        self._press = press
        self._controls = controls
        self._metrics = metrics
        self._started_at = time.time()

    def status(self) -> dict[str, Any]:
        """Everything ``kiosk status`` shows."""
        from livekit import rtc

        out = self._driver.status()
        health = self._audio.health()
        out["audio"] = {**dataclasses.asdict(health), "ok": health.ok}
        out["audio"]["echo_cancellation"] = {"enabled": self._audio.echo.enabled, "why": self._audio.echo.reason}
        problem = microphone_missing(self._audio)
        if problem is not None:
            out["problem"] = problem
        # the live session's turns, or the last session's once it ended
        out["turn_latency"] = self._audio.turns.status()
        out.update(self._controls.state())
        out["uptime_s"] = round(time.time() - self._started_at)
        if self._metrics.address is not None:
            out["metrics"] = f"http://{self._metrics.address}/metrics"
        out["versions"] = {"kiosk": __version__, "livekit": rtc.__version__, "python": platform.python_version()}
        return out

    def press(self) -> dict[str, Any]:
        """Press the button from the control socket; say what the press did."""
        before = self._driver.snapshot.state
        self._press(sm.Source.CONTROL)
        after = self._driver.snapshot.state
        did = "started a session" if after == sm.State.CONNECTING and before != after else "ended the session"
        if after == sm.State.ERROR and not self._driver.snapshot.in_session:
            did = f"refused: {microphone_missing(self._audio) or self._driver.snapshot.failure}"
        elif before == after:
            did = f"nothing to do while {after}"
        return {"state": str(after), "did": did}

    async def say(self, text: str) -> dict[str, Any]:
        """Send a typed message into the live session.

        Raises ValueError (the control socket's answer) when no session is live or the room is reconnecting.
        """
        run = self._driver.run
        if self._driver.snapshot.state == sm.State.RECONNECTING:
            raise ValueError("the room is reconnecting (the network dropped): say it again once the session is live")
        if self._driver.snapshot.state != sm.State.LIVE or run is None or run.room is None:
            raise ValueError(f"no live session (state {self._driver.snapshot.state}): press first, then say")
        await run.room.say(text)
        return {"sent": text}
