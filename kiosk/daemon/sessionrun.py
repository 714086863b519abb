"""One session from grant to goodbye: broker start, room, first words, live audio, silence, broker end.

:meth:`SessionRun.execute` reports progress as session events and returns only when everything it opened is closed:
the room is left and the broker was told (or the end was handed to the keeper's retries). Its lifecycle is one
:class:`~kiosk.daemon.lifecycle.Phase` with a pure transition table: a teardown requested from outside (button,
shutdown, the agent leaving) cancels whatever the run is waiting on; an end the run decides itself (silence, maximum
duration, no agent) is dispatched from inside, after which nothing cancels it. Every step that can hang is bounded
and its timeout named (broker start, room connect, agent join, first words, microphone uplink, broker end).
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
from kiosk.audio.preroll import for_uplink
from kiosk.broker import BrokerSession, Grant, ServerClock, SessionKeeper
from kiosk.config import SessionConfig
from kiosk.daemon.captions import Caption
from kiosk.daemon.lifecycle import PHASE_TIMEOUT, WAITING, Phase, Step, advance, timed
from kiosk.daemon.room import AgentRoom, TextTopic
from kiosk.daemon.sessionsummary import SessionSummary, connect_failure
from kiosk.errors import BrokerError, KioskError
from kiosk.reasons import FailureReason
from kiosk.wakeguard import TalkoverJudge

log = logging.getLogger(__name__)
Dispatch = Callable[[sm.Event], None]
TICK_S = 0.1
#: While the daemon stops, the broker end and the room's close each get this long (systemd allows 15 s in all).
SHUTDOWN_CLOSE_S = 2.0
#: While the daemon stops, a broker start still under way is awaited this long so its session can be ended (a vendor
#: may have opened a paid one); with the end and the room's close it stays inside systemd's TimeoutStopSec=15.
STOP_START_WAIT_S = 8.0
#: How long to keep buffering after the agent joined, for its subscription to the microphone. livekit-server confirms
#: a subscription to the publisher (``track_subscribed``); a server that never does gets live audio after this.
MIC_SUBSCRIBE_GRACE_S = 1.0
#: Live microphone frames (10 ms each) published per ``capture_frame``: one FFI request per 30 ms.
MIC_SEND_FRAMES = 3
#: The first words must reach the agent within this long: it drops a pre-connect buffer that takes over 3 s anyway.
FIRST_WORDS_TIMEOUT_S = 5.0
#: A microphone frame the room has not taken for this long means the uplink is stuck.
UPLINK_TIMEOUT_S = 5.0

__all__ = ["Audio", "SessionRun", "SessionSummary", "connect_failure"]


class Audio(Protocol):
    """What a session needs of the audio engine."""

    @property
    def last_speech_t(self) -> float | None:
        """Monotonic time of the visitor's last speech."""

    def mixer_input(self, name: str) -> Any:
        """A named mixer input with ``push(frame)`` and ``clear()``."""


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
        text_topic: TextTopic = "lk.chat",
        server_clock: ServerClock | None = None,
        trigger: sm.Trigger | None = None,
    ) -> None:
        self.number = number
        self.trigger = trigger
        #: Judges a voice-woken session once the agent joined (see kiosk.wakeguard).
        self.judge: TalkoverJudge | None = None
        self.pressed_at = pressed_at if pressed_at is not None else time.monotonic()
        self._config = config
        self._keeper = keeper
        self._audio = audio
        self._capture = capture
        self._on_caption = on_caption
        self._text_topic = text_topic
        self._server_clock = server_clock or ServerClock()
        self._grant: Grant | None = None
        self.room: AgentRoom | None = None
        self.room_name: str | None = None
        self.live_at: float | None = None
        self.ended_at: float | None = None
        self.preconnect_s = 0.0
        self.transcript: list[tuple[str, str]] = []
        self._task: asyncio.Task[Any] | None = None
        #: The run's lifecycle (see kiosk.daemon.lifecycle); only :meth:`_to` writes it.
        self.phase = Phase.READY
        #: Set by a shutdown: the broker end and the room close each get this long.
        self._close_budget_s: float | None = None
        self._silence_lateness: float | None = None
        self._start: asyncio.Task[BrokerSession] | None = None
        self.agent_at: float | None = None

    @property
    def woke(self) -> bool:
        """True when voice wake started this session."""
        return self.trigger == sm.Trigger.VOICE

    @property
    def listened(self) -> bool:
        """True when someone in the room listened to the agent (only judged for voice-woken sessions)."""
        return self.judge is not None and self.judge.listened

    # ---- control from the driver ----------------------------------------------------------------------------------

    def attach(self, task: asyncio.Task[Any]) -> None:
        """The task that runs :meth:`execute` (set by the driver as it creates it)."""
        self._task = task

    def request_end(self, *, shutdown: bool = False) -> None:
        """Teardown from outside: stop waiting and close everything (no-op once the run settled its own end).

        Works before the task has even started: :meth:`execute` then goes straight to closing.
        """
        if shutdown:
            self._close_budget_s = SHUTDOWN_CLOSE_S
        waiting = self.phase in WAITING
        self._to(Step.TEARDOWN)
        # A task cancelled before its first step never runs its finally: only cancel one that waits on a step.
        if waiting and self._task is not None:
            self._task.cancel()

    def _to(self, step: Step) -> Phase:
        """The only writer of :attr:`phase`."""
        self.phase = advance(self.phase, step)
        return self.phase

    def status(self) -> dict[str, Any]:
        """This session's part of ``kiosk status``."""
        now = time.monotonic()
        return {
            "id": self.number,
            "room": self.room_name,
            "duration_s": round(now - (self.live_at or self.pressed_at), 1),
            "live": self.live_at is not None,
        }

    def summary(self, *, end_reason: str | None) -> SessionSummary:
        """The session's summary (call after :meth:`execute` returned)."""
        end = self.ended_at or time.monotonic()
        return SessionSummary(
            number=self.number,
            room=self.room_name,
            press_to_live_ms=round((self.live_at - self.pressed_at) * 1000, 1) if self.live_at else None,
            duration_s=round(end - (self.live_at or self.pressed_at), 2),
            end_reason=end_reason,
            preconnect_s=round(self.preconnect_s, 2),
            transcript=list(self.transcript),
            silence_lateness_s=self._silence_lateness,
            agent_join_s=round(self.agent_at - self.live_at, 3) if self.agent_at and self.live_at else None,
            trigger=str(self.trigger) if self.trigger else None,
        )

    # ---- the run ---------------------------------------------------------------------------------------------------

    async def execute(self, dispatch: Dispatch) -> None:
        """Run the whole session; returns once the room is left and the broker end was attempted."""
        self._task = asyncio.current_task()
        try:
            if self._to(Step.EXECUTE) == Phase.TORN_DOWN:
                raise asyncio.CancelledError
            await self._join(dispatch)
            await self._converse(dispatch)
        except asyncio.CancelledError:
            if self.phase not in {Phase.TORN_DOWN, *WAITING}:
                raise
            log.debug("session %d: teardown requested", self.number)
        except KioskError as exc:
            self._settle(dispatch, sm.Failure(exc.reason), f"session {self.number} failed: {exc}")
        except rtc.ConnectError as exc:
            reason, why = connect_failure(exc, self._grant, self._server_clock)
            self._settle(dispatch, sm.Failure(reason), f"session {self.number}: {why}")
        except TimeoutError:
            reason = PHASE_TIMEOUT.get(self.phase, FailureReason.INTERNAL)
            self._settle(dispatch, sm.Failure(reason), f"session {self.number}: timed out while {self.phase}")
        finally:
            self._to(Step.CLOSE)
            self.ended_at = time.monotonic()
            try:
                await self._close()
            finally:
                self._to(Step.CLOSED)

    async def _join(self, dispatch: Dispatch) -> None:
        """Broker start (its deadline named broker_timeout), then the room connect (connect_timeout)."""
        deadline = self.pressed_at + self._config.connect_timeout_s
        # The start runs as its own task, awaited without cancelling it: interrupted half-way, a vendor may have
        # opened a paid session whose room the kiosk would never learn. _close waits for it and ends it.
        self._start = asyncio.ensure_future(self._keeper.start(deadline=max(deadline, time.monotonic() + 1.0)))
        await asyncio.wait({self._start})
        started = self._start.result()
        self.room_name = started.grant.room
        self._grant = started.grant
        if (late := time.monotonic() - deadline) > 0:
            raise BrokerError(
                f"the broker's start answer came {late:.1f} s after the connect deadline "
                f"(session.connect_timeout_s = {self._config.connect_timeout_s:g} s); ending it",
                reason=FailureReason.BROKER_TIMEOUT,
            )
        granted_at = time.monotonic()
        log.info(
            "session %d: room %s granted in %.0f ms (token valid %.0f s)",
            self.number,
            started.grant.room,
            (granted_at - self.pressed_at) * 1000,
            started.grant.expires_in_s(),
        )
        self._to(Step.GRANTED)
        dispatch(sm.Granted(started.grant.room))
        self.room = AgentRoom(
            on_event=dispatch, on_audio=self._play, on_caption=self._caption, text_topic=self._text_topic
        )
        budget = max(1.0, deadline - time.monotonic())
        async with timed("the room connect", budget, FailureReason.CONNECT_TIMEOUT):
            await self.room.connect(started.grant.server_url, started.grant.token.get_secret_value(), budget_s=budget)
        self.live_at = time.monotonic()
        log.info(
            "session %d: live in %.0f ms (room connect %.0f ms)",
            self.number,
            (self.live_at - self.pressed_at) * 1000,
            (self.live_at - granted_at) * 1000,
        )
        self._to(Step.CONNECTED)
        dispatch(sm.Connected())

    async def _converse(self, dispatch: Dispatch) -> None:
        assert self.room is not None
        if not await self.room.wait_for_agent(self._config.agent_join_timeout_s):
            self._settle(dispatch, sm.Failure(FailureReason.AGENT_NO_SHOW), "the agent did not join")
            return
        self.agent_at = time.monotonic()
        if self.woke:
            self.judge = TalkoverJudge(config=self._config, agent_joined_at=self.agent_at)
        # Keep buffering until the agent receives the microphone: what is sent live before that is lost, while
        # everything buffered until then arrives in the pre-connect buffer (LiveKit's clients wait the same way).
        if not await self.room.wait_mic_subscribed(MIC_SUBSCRIBE_GRACE_S):
            log.info("session %d: no subscription confirmed by the server; going live", self.number)
        pre = self._capture.take_preconnect()
        self.preconnect_s = pre.duration_s
        # A few ms per second of audio, on the loop: LiveKit's resampler is used from one thread only.
        async with timed("sending the first words", FIRST_WORDS_TIMEOUT_S, FailureReason.FIRST_WORDS_TIMEOUT):
            await self.room.send_preconnect(for_uplink(pre))
        pump = asyncio.get_running_loop().create_task(self._pump_mic(), name="mic")
        try:
            end = await self._watch(pump)
            self._settle(dispatch, end, f"session {self.number}: {type(end).__name__.lower()}")
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump_mic(self) -> None:
        assert self.room is not None
        parts: list[npt.NDArray[np.int16]] = []
        async for frame in self._capture:
            parts.append(frame.pcm)
            if len(parts) >= MIC_SEND_FRAMES:
                async with timed("the microphone uplink", UPLINK_TIMEOUT_S, FailureReason.UPLINK_TIMEOUT):
                    await self.room.send_mic(np.concatenate(parts))
                parts.clear()

    async def _watch(self, pump: asyncio.Task[None]) -> sm.Event:
        """Return Silence or MaxDuration when due (precise to one tick), or a Failure if the uplink died."""
        assert self.room is not None and self.live_at is not None
        while True:
            now = time.monotonic()
            if pump.done():
                error = pump.exception() if not pump.cancelled() else None
                log.error("session %d: the microphone uplink stopped: %s", self.number, error)
                return sm.Failure(error.reason if isinstance(error, KioskError) else FailureReason.CONNECT_FAILED)
            limit = self._config.wake_max_duration_s if self.woke else self._config.max_duration_s
            if now - self.live_at >= limit:
                return sm.MaxDuration()
            if self.judge is not None and (why := self._judge_tick(now)) is not None:
                log.info("session %d: wake guard: %s", self.number, why)
                return sm.WakeGuardEnd()
            quiet = now - self.last_activity()
            if quiet >= self._config.silence_timeout_s:
                self._silence_lateness = round(quiet - self._config.silence_timeout_s, 3)
                return sm.Silence()
            await asyncio.sleep(TICK_S)

    def _judge_tick(self, now: float) -> str | None:
        assert self.judge is not None and self.room is not None
        speaking = self.room.agent_state == sm.AgentState.SPEAKING
        return self.judge.tick(now, speaking, self.room.last_agent_audio, self._audio.last_speech_t)

    def last_activity(self) -> float:
        """When anyone last spoke: the visitor's speech, the agent's audio, or the agent thinking/speaking."""
        assert self.live_at is not None and self.room is not None
        # The silence clock starts when the agent is there to talk to, not when the room connected.
        candidates = [self.agent_at or self.live_at, self.room.last_agent_audio, self.room.last_agent_busy]
        if self._audio.last_speech_t is not None:
            candidates.append(self._audio.last_speech_t)
        if self.room.agent_state in {sm.AgentState.THINKING, sm.AgentState.SPEAKING}:
            candidates.append(time.monotonic())
        return max(candidates)

    def _settle(self, dispatch: Dispatch, event: sm.Event, message: str) -> None:
        """End from inside: settle first, so the teardown the event causes does not cancel the run."""
        if self._to(Step.SETTLE) != Phase.SETTLED:
            return  # torn down from outside meanwhile: that end is the one reported
        if isinstance(event, sm.Failure):
            log.warning("%s", message)
        else:
            log.info("%s", message)
        dispatch(event)

    async def _close(self) -> None:
        """Release everything the run opened; bounded to a few seconds when the daemon is stopping."""
        budget = self._close_budget_s
        self._capture.close()
        if self.room is not None:
            self.room.leaving()  # no more agent audio to the speaker, no more events from this room
        for name in (AGENT, BACKGROUND):
            self._audio.mixer_input(name).clear()
        try:
            if self.room is not None:
                await self.room.stop_mic(budget_s=min(1.0, budget or 1.0))
            started = await self._finish_start(STOP_START_WAIT_S if budget is not None else None)
            if started is not None:
                # The broker first: a vendor bills until it hears the end, and leaving the room takes longer.
                await asyncio.wait_for(self._keeper.end(started), timeout=budget)
        except TimeoutError:
            log.warning(
                "session %d: the broker end timed out after %.1f s; it is retried at the next start",
                self.number,
                budget,
            )
        except Exception:
            # Supervisor boundary of the broker end: the room must still be left below.
            log.exception("session %d: ending at the broker failed", self.number)
        finally:
            if self.room is not None:
                await self.room.close(budget_s=(budget or 10.0) / 2)

    async def _finish_start(self, budget: float | None) -> BrokerSession | None:
        """The started session, waiting for a start that a teardown interrupted (it may have opened one)."""
        if self._start is None:
            return None
        done, _ = await asyncio.wait({self._start}, timeout=budget)
        if not done:
            log.warning("session %d: the broker start did not answer within %.0f s of stopping", self.number, budget)
            return None
        if self._start.cancelled() or self._start.exception() is not None:
            return None
        return self._start.result()

    def _play(self, name: str, samples: npt.NDArray[np.int16]) -> None:
        self._audio.mixer_input(BACKGROUND if name == "background" else AGENT).push(samples)

    def _caption(self, caption: Caption) -> None:
        if caption.final:
            self.transcript.append((caption.role, caption.text))
        self._on_caption(caption)
