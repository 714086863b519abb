"""Observers of the session: LEDs, chimes, systemd status, the events stream; and the control socket's answers.

Observers only watch: they never dispatch session events, except :meth:`Observers.press` and :meth:`Observers.say`,
which are the control socket's requests passed on to the driver.
"""

from __future__ import annotations

import asyncio
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
from kiosk.daemon.controls import DeviceControls
from kiosk.daemon.driver import Driver
from kiosk.daemon.logsetup import fields
from kiosk.daemon.notify import Notifier
from kiosk.leds import StatusLeds
from kiosk.reasons import FailureReason
from kiosk.wakeguard import Refusal

log = logging.getLogger(__name__)
#: How long a device that failed mid-session may take to come back before the session ends as audio_device (s).
AUDIO_LOST_GRACE_S = 2.0


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
        self._audio_lost: dict[str, asyncio.TimerHandle] = {}
        self._last_refusal: Refusal | None = None
        #: Volume and mute (``kiosk status``), once the daemon has opened them.
        self.controls: DeviceControls | None = None
        #: Where the metrics are served (``host:port``), once the exporter listens.
        self.metrics_address: str | None = None
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
            # Connected while the microphone is muted: the visitor must know the agent cannot hear them.
            self._audio.play_chime(Chime.MUTED if self._audio.muted else Chime.CONNECTED, always=self._audio.muted)
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
        """Report an audio device failing or coming back; a device still down after a grace ends the session."""
        self._events.publish({"type": "audio", **dataclasses.asdict(event)})
        pending = self._audio_lost.pop(event.direction, None)
        if pending is not None:
            pending.cancel()
        if event.ok:
            return
        reason = event.reason or FailureReason.AUDIO_DEVICE
        if not self._driver.snapshot.in_session:
            self._driver.dispatch(sm.Failure(reason))
            return
        # Mid-session the supervisor reopens the device at once: a glitch it recovers from keeps the session.
        loop = asyncio.get_running_loop()
        self._audio_lost[event.direction] = loop.call_later(
            AUDIO_LOST_GRACE_S, self._audio_still_lost, event.direction, reason
        )

    def _audio_still_lost(self, direction: str, reason: FailureReason) -> None:
        self._audio_lost.pop(direction, None)
        if self._driver.snapshot.in_session:
            log.warning("audio %s still down after %.0f s: ending the session", direction, AUDIO_LOST_GRACE_S)
            self._driver.dispatch(sm.Failure(reason))

    def controls_changed(self, state: dict[str, Any]) -> None:
        """Stream a volume or mute change to ``kiosk events``."""
        self._events.publish({"type": "controls", **state})

    def wake_refused(self, refusal: Refusal) -> None:
        """Report a voice wake the wake guard refused (logged once per run of the same reason)."""
        if refusal != self._last_refusal:
            log.info("voice wake refused: %s", refusal)
        else:
            log.debug("voice wake refused: %s", refusal)
        self._last_refusal = refusal
        self._events.publish({"type": "wake", "refused": str(refusal)})

    # ---- control socket ---------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Everything ``kiosk status`` shows."""
        from livekit import rtc

        out = self._driver.status()
        out["audio"] = _health_dict(self._audio)
        out["audio"]["echo_cancellation"] = {"enabled": self._audio.echo.enabled, "why": self._audio.echo.reason}
        if self.controls is not None:
            out.update(self.controls.state())
        out["uptime_s"] = round(time.time() - self._started_at)
        if self.metrics_address is not None:
            out["metrics"] = f"http://{self.metrics_address}/metrics"
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
