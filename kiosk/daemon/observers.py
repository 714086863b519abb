"""Observers of the session: LEDs, chimes, systemd status, the events stream, the log.

Observers only show what happened: they never dispatch session events. What the control socket asks is answered by
:mod:`kiosk.daemon.controller`; what a failed audio device does to a session is decided by :mod:`kiosk.daemon.policy`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from kiosk import session as sm
from kiosk.audio import AudioEngine, AudioHealthEvent, Chime
from kiosk.daemon.captions import Caption
from kiosk.daemon.control_socket import EventBus
from kiosk.daemon.logsetup import fields
from kiosk.daemon.notify import Notifier
from kiosk.daemon.session_driver import SessionDriver
from kiosk.leds import StatusLeds
from kiosk.wakeguard import Refusal

log = logging.getLogger(__name__)


class Observers:
    """Wires every observer to the driver: it shows the session on the LEDs, in systemd, on the events stream."""

    def __init__(
        self, *, driver: SessionDriver, notifier: Notifier, audio: AudioEngine, leds: StatusLeds, events: EventBus
    ) -> None:
        """Observe ``driver``'s snapshot, captions and refused wakes; chimes play on ``audio``."""
        self._driver = driver
        self._notifier = notifier
        self._audio = audio
        self._leds = leds
        self._events = events
        self._last_refusal: Refusal | None = None
        driver.observe(self._changed, captions=self.caption, wake_refusals=self.wake_refused)

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
        if snap.state == sm.State.RECONNECTING:
            return f"reconnecting: the network dropped (session {snap.session}, room {snap.room})"
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
        """Show an audio device failing or coming back (events stream; the microphone-missing LED pattern)."""
        self._events.publish({"type": "audio", **dataclasses.asdict(event)})
        if event.direction == "input":
            self._leds.set_mic_missing(self._audio.input.stream is None)

    def device_muted(self, muted: bool) -> None:
        """The microphone's own mute (exact zeros on time, see kiosk.audio.deafness): shown as muted, not a fault."""
        self._audio.input_muted_by_device = muted
        self._leds.set_device_muted(muted)
        self._events.publish({"type": "audio", "direction": "input", "ok": True, "muted_by_device": muted})

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
