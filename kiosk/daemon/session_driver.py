"""The session driver: the single writer of the session snapshot, and the one place effects are carried out.

Every input (button, voice wake, control socket, the room, timers) becomes a :mod:`kiosk.session` event passed to
:meth:`SessionDriver.dispatch` on the event loop. ``dispatch`` applies the pure transition, tells the observers (LEDs,
systemd status, chimes, the events stream) about a changed snapshot, and carries out the effects: start a session
task, tear it down, arm the error timer, or release ``run()`` when nothing is open any more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from kiosk import session as sm
from kiosk.config import KioskConfig
from kiosk.daemon.captions import Caption
from kiosk.daemon.logsetup import fields
from kiosk.daemon.sessionrun import SessionRun, SessionSummary
from kiosk.reasons import EndReason, FailureReason
from kiosk.wakeguard import Refusal, WakeGate

log = logging.getLogger(__name__)

Observer = Callable[[sm.Snapshot, sm.Snapshot], None]
SUMMARIES_KEPT = 50
RECENT_KEPT = 5


@dataclasses.dataclass
class LastEnd:
    """How the last session ended."""

    session: int
    reason: str
    failure: str | None
    at: float


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """What the driver hands the session factory when a session begins."""

    #: The session's number (1, 2, ... since start).
    number: int
    #: When the press or the speech that woke the kiosk happened (``time.monotonic()``, s); None: now.
    pressed_at: float | None
    #: The config in force (a reload changes it between sessions).
    config: KioskConfig
    trigger: sm.Trigger | None
    #: Where the session's captions go: the driver's caption observers.
    on_caption: Callable[[Caption], None]
    #: The agent's state as the snapshot has it (its one home).
    agent_state: Callable[[], sm.AgentState]


class SessionDriver:
    """Owns the snapshot; runs at most one :class:`SessionRun` at a time."""

    def __init__(
        self,
        *,
        config: KioskConfig,
        make_run: Callable[[RunRequest], SessionRun],
        wake_gate: WakeGate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Run sessions made by ``make_run``; ``wake_gate`` judges voice wakes (none: every wake is let in);
        ``clock`` (monotonic s) times presses, cooldowns and the wake gate."""
        self.config = config
        self._now = clock
        self.wake_gate = wake_gate
        #: The last few sessions, newest last, for ``kiosk status``.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self.snapshot = sm.Snapshot()
        self._make_run = make_run
        self._observers: list[Observer] = []
        self._caption_observers: list[Callable[[Caption], None]] = []
        self._refusal_observers: list[Callable[[Refusal], None]] = []
        self._run: SessionRun | None = None
        self._task: asyncio.Task[None] | None = None
        #: True from a session's start until its run returned its end (a teardown then interrupts it).
        self._executing = False
        self._error_timer: asyncio.TimerHandle | None = None
        self._pending_since: float | None = None
        self.exited = asyncio.Event()
        self.last_end: LastEnd | None = None
        self.counters: Counter[str] = Counter()
        self.summaries: deque[SessionSummary] = deque(maxlen=SUMMARIES_KEPT)
        self.sessions_done = 0
        self.on_summary: Callable[[SessionSummary], None] | None = None
        self.idle_since = self._now()

    def observe(
        self,
        observer: Observer | None = None,
        *,
        captions: Callable[[Caption], None] | None = None,
        wake_refusals: Callable[[Refusal], None] | None = None,
    ) -> None:
        """Call ``observer(old, new)`` on every snapshot change, ``captions(caption)`` on each caption update of the
        session under way and ``wake_refusals(refusal)`` on each voice wake the wake gate refused.

        Observers only show what happened (LEDs, systemd status, the events stream, logs); they never dispatch.
        """
        if observer is not None:
            self._observers.append(observer)
        if captions is not None:
            self._caption_observers.append(captions)
        if wake_refusals is not None:
            self._refusal_observers.append(wake_refusals)

    def _caption(self, caption: Caption) -> None:
        for observer in self._caption_observers:
            observer(caption)

    @property
    def run(self) -> SessionRun | None:
        """The session being run, if any."""
        return self._run

    def press(self, source: sm.Source, *, at: float | None = None) -> None:
        """A tap from ``source`` at monotonic time ``at``: starts a session, or ends the current one."""
        self.counters["presses"] += 1
        self._pending_since = at if at is not None else self._now()
        self.dispatch(sm.Press(source))

    def wake(self, speech_start: float, *, level_dbfs: float | None = None) -> None:
        """Voice wake: speech began at ``speech_start``; ignored during the cooldown, refused by the wake gate."""
        if self.snapshot.state != sm.State.IDLE:
            return
        if self._now() - self.idle_since < self.config.trigger.cooldown_s:
            log.debug("voice wake ignored during the cooldown")
            return
        if self.wake_gate is not None and level_dbfs is not None:
            refusal = self.wake_gate.admit(self._now(), level_dbfs=level_dbfs)
            if refusal is not None:
                self.counters[f"wake_refused.{refusal}"] += 1
                for observer in self._refusal_observers:
                    observer(refusal)
                return
        self.counters["wakes"] += 1
        self._pending_since = speech_start
        self.dispatch(sm.Wake())

    def dispatch(self, event: sm.Event) -> None:
        """Apply ``event``; the only way the snapshot ever changes."""
        old = self.snapshot
        new, effects = sm.transition(old, event)
        self.snapshot = new
        if new.state == sm.State.RECONNECTING and old.state != sm.State.RECONNECTING:
            self.counters["reconnects"] += 1
        if new != old and new.state != old.state:
            log.info(
                "%s -> %s%s",
                old.state,
                new.state,
                f" ({new.end_reason}{', ' + new.failure if new.failure else ''})"
                if new.state == sm.State.ENDING
                else "",
                extra=fields(state=new.state, session=new.session, room=new.room, reason=new.failure),
            )
            if new.state == sm.State.IDLE:
                self.idle_since = self._now()
        for effect in effects:
            self._carry_out(effect)
        if new != old:
            for observer in self._observers:
                try:
                    observer(old, new)
                except Exception:
                    # Observers only show state: a broken LED or status line must never stop the session machine.
                    log.exception("observer %r failed", observer)

    def _carry_out(self, effect: sm.Effect) -> None:
        if isinstance(effect, sm.BeginSession):
            self.counters["sessions"] += 1
            request = RunRequest(
                number=effect.session,
                pressed_at=self._pending_since,
                config=self.config,
                trigger=self.snapshot.trigger,
                on_caption=self._caption,
                agent_state=lambda: self.snapshot.agent,
            )
            self._run = self._make_run(request)
            self._executing = True
            self._pending_since = None
            self._task = asyncio.get_running_loop().create_task(self._supervise(self._run), name="session")
            self._run.attach(self._task)
        elif isinstance(effect, sm.Teardown):
            if effect.failure is not None:
                self.counters[f"failure.{effect.failure}"] += 1
            self.last_end = LastEnd(effect.session, effect.reason, effect.failure, time.time())
            if self._run is not None:
                if effect.reason == EndReason.SHUTDOWN:
                    self._run.hurry()
                if self._executing:
                    self._run.interrupt()  # an end from outside; one the run returned needs nothing more
        elif isinstance(effect, sm.Hurry):
            if self._run is not None and self._run.number == effect.session:
                self._run.hurry()  # an end already under way: make it quick
        elif isinstance(effect, sm.StartErrorTimer):
            if self._error_timer is not None:
                self._error_timer.cancel()
            self._error_timer = asyncio.get_running_loop().call_later(
                self.config.session.error_display_s, self.dispatch, sm.ErrorElapsed()
            )
        elif isinstance(effect, sm.Exit):
            self.exited.set()

    async def _supervise(self, run: SessionRun) -> None:
        """Run ``run`` until its end, dispatch the end it decided (if any), close it, then ``Ended``."""
        end: sm.Event | None = None
        try:
            end = await run.execute(self.dispatch)
        except Exception:
            # Supervisor boundary: a session must never take the daemon down with it.
            log.exception("session %d crashed", run.number)
        finally:
            self._executing = False
            if end is not None:
                self.dispatch(end)
            if self.snapshot.state in {sm.State.CONNECTING, sm.State.LIVE, sm.State.RECONNECTING}:
                self.dispatch(sm.Failure(FailureReason.INTERNAL))
            try:
                await run.close()
            except Exception:
                log.exception("session %d: closing it failed", run.number)
            last = self.last_end
            summary = run.summary(end_reason=last.reason if last else None, failure=last.failure if last else None)
            self.summaries.append(summary)
            self._remember(run, summary)
            self.sessions_done += 1
            self._run = None
            self._task = None
            self.dispatch(sm.Ended())
            if self.on_summary is not None:
                self.on_summary(summary)

    def _remember(self, run: SessionRun, summary: SessionSummary) -> None:
        """Keep the session for ``kiosk status`` and tell the wake gate how it ended."""
        failure = self.last_end.failure if self.last_end and self.last_end.session == run.number else None
        self.recent.append(
            {
                "id": run.number,
                "trigger": str(run.trigger) if run.trigger else None,
                "end_reason": summary.end_reason,
                "failure": failure,
                "ended_at": time.time(),
                "duration_s": summary.duration_s,
                "press_to_live_ms": summary.press_to_live_ms,
            }
        )
        if self.wake_gate is None:
            return
        rest = self.wake_gate.session_ended(
            self._now(), woke=run.woke, reason=summary.end_reason, listened=run.listened
        )
        if rest:
            log.info("voice wake rests for %.0f s: nobody listened to session %d's agent", rest, run.number)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait for the current session task to finish; False if it did not within ``timeout_s``."""
        task = self._task
        if task is None:
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        return bool(done)

    def status(self) -> dict[str, Any]:
        """The driver's part of ``kiosk status``."""
        snap = self.snapshot
        out: dict[str, Any] = {
            "state": str(snap.state),
            "agent": str(snap.agent) if snap.state == sm.State.LIVE else None,
            "failure": str(snap.failure) if snap.state == sm.State.ERROR and snap.failure else None,
            "session": self._run.status() if self._run is not None else None,
            "last_end": dataclasses.asdict(self.last_end) if self.last_end else None,
            "counters": dict(self.counters),
            "recent": list(reversed(self.recent)),
        }
        if self.wake_gate is not None and self.config.trigger.voice_wake:
            out["wake_guard"] = self.wake_gate.status(self._now())
        return out
