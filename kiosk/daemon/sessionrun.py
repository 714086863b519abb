"""One session from grant to goodbye: broker start, room, first words, live audio, silence, broker end.

:meth:`SessionRun.execute` reports progress as session events and returns the end it decided itself (silence,
maximum duration, no agent, a failure), or None when it was interrupted from outside (button, shutdown, the agent
leaving: :meth:`SessionRun.interrupt` cancels whatever it waits on). The driver dispatches that end, then
:meth:`SessionRun.close` leaves the room and tells the broker (or hands the end to the keeper's retries). Its lifecycle
is one :class:`~kiosk.daemon.lifecycle.Phase` with a pure transition table; once the run settled its own end nothing
cancels it. Every step that can hang is bounded and its timeout named (broker start, room connect, agent join, first
words, microphone uplink, broker end).

While the SDK reconnects the room (:mod:`kiosk.daemon.linkdown`) the run keeps the same broker session, pauses the
silence and maximum-duration clocks, holds the visitor's words and sends them once the room is back; an outage
longer than ``session.network_lost_s`` ends the session as ``network_lost``. When the agent ends the call
(:class:`~kiosk.session.AgentEnded`), its last words play out before the speaker's input is cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from livekit import rtc

from kiosk import session as sm
from kiosk.audio import AGENT, BACKGROUND, SessionCapture
from kiosk.broker import BrokerSession, ConnectionDetails, ServerClock, SessionKeeper
from kiosk.broker.end_retries import PROMPT_ATTEMPT_S
from kiosk.config import SessionConfig
from kiosk.daemon.captions import Caption
from kiosk.daemon.lifecycle import WAITING, Phase, Step, advance, timed
from kiosk.daemon.linkdown import MicBacklog, SessionLink
from kiosk.daemon.linkwatch import LinkWatch
from kiosk.daemon.room import AgentRoom, TextTopic
from kiosk.daemon.sessionclock import LiveClock
from kiosk.daemon.sessionsummary import SessionSummary, SessionTimes, failure_for
from kiosk.daemon.uplink import MicUplink, send_first_words
from kiosk.errors import KioskError
from kiosk.reasons import FailureReason

log = logging.getLogger(__name__)
Dispatch = Callable[[sm.Event], None]
#: While the daemon stops, the broker end and the room's close each get this long (systemd allows 15 s in all).
SHUTDOWN_CLOSE_S = 2.0
#: How long to keep buffering after the agent joined, for its subscription to the microphone. livekit-server confirms
#: a subscription to the publisher (``track_subscribed``); a server that never does gets live audio after this.
MIC_SUBSCRIBE_GRACE_S = 1.0
#: The longest the agent's last words may keep playing after it ended the call by deleting the room (s). Its goodbye
#: is in the room when it deletes it (livekit-agents' ``EndCallTool`` waits for the speech's playout first); what is
#: left is in the jitter buffer and the mixer, usually under 0.5 s.
AGENT_PLAY_OUT_S = 3.0
#: The agent's audio counts as over when none of its frames arrived for this long (s) and its mixer input is empty:
#: longer than the gaps between the SDK's 30 ms frames on a busy machine (0.1 s ended the play-out 0.2 s early once).
AGENT_PLAY_OUT_QUIET_S = 0.5

__all__ = ["Audio", "SessionRun", "SessionSummary"]


class Audio(Protocol):
    """What a session needs of the audio engine."""

    @property
    def last_speech_t(self) -> float | None:
        """Monotonic time of the visitor's last speech."""

    def mixer_input(self, name: str) -> Any:
        """A named mixer input with ``push(frame)``, ``clear()`` and ``active`` (playing or holding audio)."""


class SessionRun:
    """Runs session number ``number``; create one per session."""

    def __init__(
        self,
        *,
        number: int,
        pressed_at: float | None,
        config: SessionConfig,
        keeper: SessionKeeper,
        audio: Audio,
        capture: SessionCapture,
        on_caption: Callable[[Caption], None],
        agent_state: Callable[[], sm.AgentState],
        text_topic: TextTopic = "lk.chat",
        server_clock: ServerClock | None = None,
        trigger: sm.Trigger | None = None,
        clock: Callable[[], float] = time.monotonic,
        short_of_cpu: Callable[[], bool] = lambda: False,
    ) -> None:
        self.number = number
        self._short_of_cpu = short_of_cpu
        self.trigger = trigger
        #: The run's clock (monotonic s): the same as the audio engine's and the room's timestamps.
        self._now = clock
        self.times = SessionTimes(pressed_at=pressed_at if pressed_at is not None else clock())
        self._config = config
        self._keeper = keeper
        self._audio = audio
        self._capture = capture
        self._on_caption = on_caption
        self._agent_state = agent_state
        self._text_topic = text_topic
        self._server_clock = server_clock or ServerClock()
        self._grant: ConnectionDetails | None = None
        self.room: AgentRoom | None = None
        self.room_name: str | None = None
        self.preconnect_s = 0.0
        self.transcript: list[tuple[str, str]] = []
        self._task: asyncio.Task[Any] | None = None
        #: The run's lifecycle (see kiosk.daemon.lifecycle); only :meth:`_to` writes it.
        self.phase = Phase.READY
        #: Set by a shutdown: the broker end and the room close each get this long.
        self._close_budget_s: float | None = None
        self._started: BrokerSession | None = None
        self._live: LiveClock | None = None
        self._dispatch: Dispatch = lambda event: None
        #: The end the run decided itself (see :meth:`_settle`), returned by :meth:`execute`.
        self._end: sm.Event | None = None
        #: When the room's link was down (the SDK reconnecting); the clocks leave that time out.
        self._backlog = MicBacklog(
            heard_speech_t=lambda: self._audio.last_speech_t,
            downstream_s=lambda: self.room.mic_queued_s if self.room is not None else 0.0,
        )
        self.link = SessionLink(
            number=number,
            backlog=self._backlog,
            dispatch=lambda event: self._dispatch(event),
            room_link_up=lambda: self.room is not None and self.room.link_up,
            clock=clock,
        )
        self.outages = self.link.outages
        #: Set when the agent ended the call: let its last words play before clearing the speaker's input.
        self._play_out = False
        self._link_watch: LinkWatch | None = None

    @property
    def woke(self) -> bool:
        """True when voice wake started this session."""
        return self.trigger == sm.Trigger.VOICE

    @property
    def listened(self) -> bool:
        """True when someone in the room listened to the agent (only judged for voice-woken sessions)."""
        judge = self._live.judge if self._live is not None else None
        return judge is not None and judge.listened

    # ---- control from the driver ----------------------------------------------------------------------------------

    def attach(self, task: asyncio.Task[Any]) -> None:
        """The task that runs :meth:`execute` (set by the driver as it creates it)."""
        self._task = task

    def hurry(self) -> None:
        """The daemon is stopping: the broker end and the room close each get ``SHUTDOWN_CLOSE_S``."""
        self._close_budget_s = SHUTDOWN_CLOSE_S

    def interrupt(self) -> None:
        """Teardown from outside while :meth:`execute` runs: stop waiting (no-op once the run settled its own end).

        Works before the task has even started: :meth:`execute` then returns None at once.
        """
        waiting = self.phase in WAITING
        self._to(Step.TEARDOWN)
        # A task cancelled before its first step never runs at all (nor the driver's close after it): only cancel
        # one that waits on a step.
        if waiting and self._task is not None:
            self._task.cancel()

    def _to(self, step: Step) -> Phase:
        """The only writer of :attr:`phase`."""
        self.phase = advance(self.phase, step)
        return self.phase

    def status(self) -> dict[str, Any]:
        """This session's part of ``kiosk status``."""
        now = self._now()
        return {
            "id": self.number,
            "room": self.room_name,
            "duration_s": round(self.times.duration_s(now), 1),
            "live": self.times.live_at is not None,
            "reconnects": self.outages.count,
            "reconnecting_s": round(now - down, 1) if (down := self.outages.down_since) is not None else None,
            "network_lost_s": self._config.network_lost_s,
        }

    def summary(self, *, end_reason: str | None, failure: str | None = None) -> SessionSummary:
        """The session's summary (call after :meth:`execute` returned); ``failure``: the failure it ended by."""
        return SessionSummary(
            number=self.number,
            room=self.room_name,
            press_to_live_ms=self.times.press_to_live_ms(),
            duration_s=round(self.times.duration_s(self._now()), 2),
            end_reason=end_reason,
            preconnect_s=round(self.preconnect_s, 2),
            transcript=list(self.transcript),
            silence_lateness_s=self._live.silence_lateness if self._live is not None else None,
            agent_join_s=self.times.agent_join_s(),
            trigger=str(self.trigger) if self.trigger else None,
            failure=failure,
        )

    # ---- the run ---------------------------------------------------------------------------------------------------

    async def execute(self, dispatch: Dispatch) -> sm.Event | None:
        """Run the session until its end: return the end the run decided (to be dispatched by the caller), or None
        when it was interrupted from outside. :meth:`close` must follow, whatever happened."""
        self._task = asyncio.current_task()
        self._dispatch = dispatch
        try:
            if self._to(Step.EXECUTE) == Phase.TORN_DOWN:
                raise asyncio.CancelledError
            await self._join(dispatch)
            await self._converse()
        except asyncio.CancelledError:
            if self.phase not in {Phase.TORN_DOWN, *WAITING}:
                raise
            log.debug("session %d: teardown requested", self.number)
        except (KioskError, rtc.ConnectError, TimeoutError) as exc:
            reason, why = failure_for(exc, self.phase, self._grant, self._server_clock)
            self._settle(sm.Failure(reason), f"session {self.number}: {why}")
        return self._end

    async def close(self) -> None:
        """Release everything the run opened: the room is left and the broker was told (or the end was handed to the
        keeper's retries); bounded to a few seconds when the daemon is stopping (:meth:`hurry`)."""
        self._to(Step.CLOSE)
        self.times.ended_at = self._now()
        try:
            await self._close()
        finally:
            self._to(Step.CLOSED)

    async def _join(self, dispatch: Dispatch) -> None:
        """Broker start (its deadline named broker_timeout), then the room connect (connect_timeout)."""
        times = self.times
        deadline = times.pressed_at + self._config.connect_timeout_s
        # The keeper stops waiting at the deadline (broker_timeout) or when this run is torn down; the request goes
        # on in the background, and a session it turns out to have opened is recorded and ended there.
        started = await self._keeper.start(deadline=max(deadline, self._now() + 1.0))
        self._started = started
        self.room_name = started.grant.room
        self._grant = started.grant
        granted_at = self._now()
        log.info(
            "session %d: room %s granted in %.0f ms (token valid %.0f s)",
            self.number,
            started.grant.room,
            (granted_at - times.pressed_at) * 1000,
            started.grant.expires_in_s(),
        )
        self._to(Step.GRANTED)
        dispatch(sm.Granted(started.grant.room))
        self.room = AgentRoom(
            on_event=self._room_event,
            on_audio=self._play,
            on_caption=self._caption,
            agent_state=self._agent_state,
            text_topic=self._text_topic,
            clock=self._now,
            short_of_cpu=self._short_of_cpu,
        )
        budget = max(1.0, deadline - self._now())
        async with timed("the room connect", budget, FailureReason.CONNECT_TIMEOUT):
            await self.room.connect(started.grant.server_url, started.grant.token.get_secret_value(), budget_s=budget)
        live_at = times.live_at = self._now()
        log.info(
            "session %d: live in %.0f ms (room connect %.0f ms)",
            self.number,
            (live_at - times.pressed_at) * 1000,
            (live_at - granted_at) * 1000,
        )
        self._to(Step.CONNECTED)
        dispatch(sm.Connected())
        if self.outages.down_since is not None:
            dispatch(sm.Reconnecting())  # the SDK began reconnecting before the session was live
        # The SDK notices a dead link only when its signal ping times out (12-15 s); the kiosk's own evidence, WebRTC's
        # receive counters, tells within seconds (kiosk.daemon.linkwatch).
        self._link_watch = LinkWatch(room=self.room.room, on_change=self.link.watch_saw)
        self._link_watch.start()

    async def _converse(self) -> None:
        assert self.room is not None
        if not await self.room.wait_for_agent(self._config.agent_join_timeout_s):
            self._settle(sm.Failure(FailureReason.AGENT_NO_SHOW), "the agent did not join")
            return
        agent_at = self.times.agent_at = self._now()
        assert self.times.live_at is not None
        self._live = LiveClock(
            number=self.number,
            config=self._config,
            agent=self.room.activity,
            agent_state=self._agent_state,
            audio=self._audio,
            live_at=self.times.live_at,
            agent_at=agent_at,
            outages=self.outages,
            woke=self.woke,
            clock=self._now,
        )
        # Keep buffering until the agent receives the microphone: what is sent live before that is lost, while
        # everything buffered until then arrives in the pre-connect buffer (LiveKit's clients wait the same way).
        if not await self.room.wait_mic_subscribed(MIC_SUBSCRIBE_GRACE_S):
            log.info("session %d: no subscription confirmed by the server; going live", self.number)
        pre = self._capture.take_preconnect()
        self.preconnect_s = pre.duration_s
        watch = self._link_watch
        end = await send_first_words(
            self.room,
            pre,
            outages=self.outages,
            last_arrival=lambda: watch.last_arrival if watch is not None else None,
            due=self._live.due,
            timeout_s=self._config.first_words_timeout_s,
        )
        if end is not None:
            self._settle(end)
            return
        uplink = MicUplink(
            number=self.number, capture=self._capture, room=self.room, backlog=self._backlog, outages=self.outages
        )
        pump = asyncio.get_running_loop().create_task(uplink.run(), name="mic")
        try:
            self._settle(await self._live.wait_for_end(pump, self.link.moved))
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    def _room_event(self, event: sm.Event) -> None:
        """The room's events: an outage's start and end counted once (:class:`SessionLink`), an agent's goodbye noted,
        then dispatched."""
        if isinstance(event, sm.Reconnecting | sm.Reconnected) and not self.link.sdk_saw(event):
            return  # the link watch saw this change first
        if isinstance(event, sm.AgentEnded):
            self._play_out = True
        self._dispatch(event)

    def _settle(self, event: sm.Event, message: str | None = None) -> None:
        """End from inside: settle on ``event``, which :meth:`execute` returns (nothing cancels the run now); log
        ``message``, or the end's name."""
        if self._to(Step.SETTLE) != Phase.SETTLED:
            return  # torn down from outside meanwhile: that end is the one reported
        if message is None:
            what = f"failure {event.reason}" if isinstance(event, sm.Failure) else type(event).__name__.lower()
            message = f"session {self.number}: {what}"
        if isinstance(event, sm.Failure):
            log.warning("%s", message)
        else:
            log.info("%s", message)
        self._end = event

    async def _close(self) -> None:
        """Release everything the run opened; bounded to a few seconds when the daemon is stopping."""
        budget = self._close_budget_s
        if self._link_watch is not None:
            await self._link_watch.aclose()
        if self._play_out and budget is None:
            room = self.room
            await play_out(
                self.number,
                self._audio.mixer_input(AGENT),
                lambda: room.activity.last_frame if room else 0.0,
                self._now,
            )
        self._capture.close()
        if self.room is not None:
            self.room.leaving()  # no more agent audio to the speaker, no more events from this room
        for name in (AGENT, BACKGROUND):
            self._audio.mixer_input(name).clear()
        try:
            if self.room is not None:
                await self.room.stop_mic(budget_s=min(1.0, budget or 1.0))
            if self._started is not None:
                # The broker first: a vendor bills until it hears the end, and leaving the room takes longer.
                link_down = self.outages.down_since is not None
                await end_at_broker(self.number, self._keeper, self._started, budget_s=budget, link_down=link_down)
        finally:
            if self.room is not None:
                await self.room.close(budget_s=(budget or 10.0) / 2)

    def _play(self, name: str, samples: npt.NDArray[np.int16]) -> None:
        self._audio.mixer_input(BACKGROUND if name == "background" else AGENT).push(samples)

    def _caption(self, caption: Caption) -> None:
        if caption.final:
            self.transcript.append((caption.role, caption.text))
        self._on_caption(caption)


async def end_at_broker(
    number: int, keeper: SessionKeeper, started: BrokerSession, *, budget_s: float | None, link_down: bool
) -> None:
    """Tell the broker session ``number`` ended, within ``budget_s`` (None: the keeper's own timeout); never raises.

    With the link down, one short try (``PROMPT_ATTEMPT_S``): the keeper's background retries end it once the network
    is back, and a session still open at the next start is ended then (its ledger record).
    """
    try:
        await asyncio.wait_for(keeper.end(started, timeout_s=PROMPT_ATTEMPT_S if link_down else None), budget_s)
    except TimeoutError:
        log.warning(
            "session %d: the broker end timed out after %.1f s; it is retried at the next start", number, budget_s
        )
    except Exception:
        # Supervisor boundary of the broker end: the room must still be left after it.
        log.exception("session %d: ending at the broker failed", number)


async def play_out(number: int, agent: Any, last_frame: Callable[[], float], clock: Callable[[], float]) -> None:
    """Let the agent's last words reach the speaker: wait, at most :data:`AGENT_PLAY_OUT_S`, until no more of its audio
    arrives (``last_frame()``, monotonic s) and its mixer input ``agent`` has played everything it held."""
    started = clock()
    while (now := clock()) - started < AGENT_PLAY_OUT_S:
        if not agent.active and now - last_frame() >= AGENT_PLAY_OUT_QUIET_S:
            log.info("session %d: the agent's last words played out in %.2f s", number, now - started)
            return
        await asyncio.sleep(0.02)
    log.info("session %d: the agent's last words cut after %.1f s", number, AGENT_PLAY_OUT_S)
