"""Observers of the session: LEDs, chimes, systemd status, the events stream; and the control socket's answers.

Observers only watch: they never dispatch session events, except :meth:`Observers.press` and :meth:`Observers.say`,
which are the control socket's requests passed on to the driver.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from typing import Any

from kiosk import __version__
from kiosk import session as sm
from kiosk.audio import AudioEngine, AudioHealthEvent, Chime
from kiosk.daemon.captions import Caption
from kiosk.daemon.control import EventBus
from kiosk.daemon.driver import Driver
from kiosk.daemon.logsetup import fields
from kiosk.daemon.notify import Notifier
from kiosk.leds import StatusLeds
from kiosk.reasons import FailureReason

log = logging.getLogger(__name__)


class Observers:
    """Wires every observer to the driver and answers the control socket."""

    def __init__(
        self, *, driver: Driver, notifier: Notifier, audio: AudioEngine, leds: StatusLeds, events: EventBus
    ) -> None:
        self._driver = driver
        self._notifier = notifier
        self._audio = audio
        self._leds = leds
        self._events = events
        self._started_at = time.time()
        driver.observe(self._changed)

    def start(self) -> None:
        """Show the initial state."""
        self._leds.update(self._driver.snapshot)

    def _changed(self, old: sm.Snapshot, new: sm.Snapshot) -> None:
        self._leds.update(new)
        self._notifier.status(self.status_line(new))
        if new.state != old.state:
            self._chime(old, new)
        event: dict[str, Any] = {"type": "state", "state": str(new.state), "session": new.session}
        if new.state == sm.State.LIVE:
            event["agent"] = str(new.agent)
        if new.room:
            event["room"] = new.room
        if new.state in {sm.State.ENDING, sm.State.ERROR}:
            event["reason"] = str(new.end_reason) if new.end_reason else None
            event["failure"] = str(new.failure) if new.failure else None
        self._events.publish(event)

    def _chime(self, old: sm.Snapshot, new: sm.Snapshot) -> None:
        if new.state == sm.State.LIVE and old.state == sm.State.CONNECTING:
            self._audio.play_chime(Chime.CONNECTED)
        elif new.state == sm.State.ERROR:
            self._audio.play_chime(Chime.ERROR)
        elif new.state == sm.State.IDLE and old.state == sm.State.ENDING:
            self._audio.play_chime(Chime.ENDED)

    @staticmethod
    def status_line(snap: sm.Snapshot) -> str:
        """The one line ``systemctl status`` shows."""
        if snap.state == sm.State.LIVE:
            return f"live: agent {snap.agent} (session {snap.session}, room {snap.room})"
        if snap.state == sm.State.CONNECTING:
            return f"connecting (session {snap.session})"
        if snap.state == sm.State.ENDING:
            return f"ending session {snap.session}: {snap.end_reason}" + (f" ({snap.failure})" if snap.failure else "")
        if snap.state == sm.State.ERROR:
            return f"error: {snap.failure}"
        return "idle: ready" + (" (stopping)" if snap.stopping else "")

    def caption(self, caption: Caption) -> None:
        """Stream a caption update to ``kiosk events``; log final lines (``session.log_transcript``)."""
        snap = self._driver.snapshot
        if caption.final and self._driver.config.session.log_transcript:
            log.info("%s: %s", caption.role, caption.text, extra=fields(session=snap.session, room=snap.room))
        self._events.publish({"type": "caption", "session": snap.session, **dataclasses.asdict(caption)})

    def audio_health(self, event: AudioHealthEvent) -> None:
        """Report an audio device failing or coming back."""
        self._events.publish({"type": "audio", **dataclasses.asdict(event)})
        if not event.ok and not self._driver.snapshot.in_session:
            self._driver.dispatch(sm.Failure(event.reason or FailureReason.AUDIO_DEVICE))

    # ---- control socket ---------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Everything ``kiosk status`` shows."""
        from livekit import rtc

        out = self._driver.status()
        out["audio"] = _health_dict(self._audio)
        out["uptime_s"] = round(time.time() - self._started_at)
        out["versions"] = {"kiosk": __version__, "livekit": rtc.__version__, "python": platform.python_version()}
        return out

    def press(self) -> dict[str, Any]:
        """Press the button from the control socket."""
        before = self._driver.snapshot.state
        self._driver.press(sm.Source.CONTROL)
        after = self._driver.snapshot.state
        did = "started a session" if after == sm.State.CONNECTING and before != after else "ended the session"
        if before == after:
            did = f"nothing to do while {after}"
        return {"state": str(after), "did": did}

    async def say(self, text: str) -> dict[str, Any]:
        """Send a typed message into the live session."""
        run = self._driver.run
        if self._driver.snapshot.state != sm.State.LIVE or run is None or run.room is None:
            raise ValueError(f"no live session (state {self._driver.snapshot.state}): press first, then say")
        await run.room.say(text)
        return {"sent": text}


def _health_dict(audio: AudioEngine) -> dict[str, Any]:
    health = audio.health()
    out = dataclasses.asdict(health)
    out["ok"] = health.ok
    return out
