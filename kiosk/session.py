"""The session state machine: one enum, one pure transition function, one writer.

::

    IDLE ──press/wake──> CONNECTING ──connected──> LIVE ──silence/max/button/agent left or ended/...──> ENDING ──> IDLE
                              │               reconnecting │ ^ reconnected                                │
                              │                            v │                                          │
                              │                       RECONNECTING ──button/network lost/room closed──> ENDING
                              │                                                                         │
                              └──failure/shutdown───────────────────────────────────────────────────> ENDING ──> ERROR
                                                                                                 (timed) ──> IDLE

Every way out of CONNECTING, LIVE or RECONNECTING goes through ENDING, whose ``Teardown`` effect tells the driver to
leave the room and end the session at the broker; the driver answers with :class:`Ended`. ``transition`` never
performs I/O and never reads a clock: timers are the driver's, and their expiry comes back as events.

RECONNECTING is a state of its own, not a flag beside LIVE: while the SDK resumes or rejoins (``rtc.Room`` events
``reconnecting`` / ``reconnected``) the session is neither live nor over. Nothing is heard either way, so the
silence, maximum-duration and wake-guard clocks do not apply (their events are ignored here, and the run pauses
them); the agent's state is unknown (its last value is kept and shown again once the room is back); the only clock
is the outage's own (``session.network_lost_s``, which ends the session as ``network_lost``). Every observer keys
its table on the state, so a state of its own makes each of them say what it shows while the link is down.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TypeAlias

from kiosk.reasons import EndReason, FailureReason


class State(enum.StrEnum):
    """Where the kiosk is in a session's life."""

    IDLE = "idle"
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    ENDING = "ending"
    ERROR = "error"


class AgentState(enum.StrEnum):
    """The agent's own state while LIVE, as published in its ``lk.agent.state`` attribute."""

    ABSENT = "absent"
    INITIALIZING = "initializing"
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"

    @classmethod
    def parse(cls, value: str | None) -> AgentState:
        """Map an attribute value to a state; unknown values count as initializing."""
        try:
            return cls(value or "initializing")
        except ValueError:
            return cls.INITIALIZING


class Source(enum.StrEnum):
    """What pressed: the GPIO button, the control socket, or the demo's keyboard."""

    BUTTON = "button"
    CONTROL = "control"
    KEYBOARD = "keyboard"


class Trigger(enum.StrEnum):
    """What started a session: a press from one of the :class:`Source` s, or voice wake."""

    BUTTON = "button"
    CONTROL = "control"
    KEYBOARD = "keyboard"
    VOICE = "voice"


# ---- events -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Press:
    """A tap: starts a session when idle, ends it when connecting or live."""

    source: Source = Source.BUTTON


@dataclasses.dataclass(frozen=True)
class Wake:
    """Voice activity long enough to start a session."""


@dataclasses.dataclass(frozen=True)
class Granted:
    """The broker granted a room."""

    room: str


@dataclasses.dataclass(frozen=True)
class Connected:
    """The room is connected and the microphone track published."""


@dataclasses.dataclass(frozen=True)
class AgentJoined:
    """The agent participant is in the room."""


@dataclasses.dataclass(frozen=True)
class AgentStateChanged:
    """The agent's ``lk.agent.state`` changed."""

    state: AgentState


@dataclasses.dataclass(frozen=True)
class Silence:
    """Nobody has spoken for ``session.silence_timeout_s``."""


@dataclasses.dataclass(frozen=True)
class MaxDuration:
    """The session reached ``session.max_duration_s``."""


@dataclasses.dataclass(frozen=True)
class WakeGuardEnd:
    """A voice-woken session nobody is listening to (see :mod:`kiosk.wakeguard`)."""


@dataclasses.dataclass(frozen=True)
class AgentLeft:
    """The agent left the room."""


@dataclasses.dataclass(frozen=True)
class Disconnected:
    """The room disconnected for good for a reason with no name of its own (see :mod:`kiosk.daemon.roomends`)."""


@dataclasses.dataclass(frozen=True)
class AgentEnded:
    """The agent ended the call: the room was deleted after the agent spoke (livekit-agents' ``EndCallTool``)."""


@dataclasses.dataclass(frozen=True)
class Reconnecting:
    """The SDK lost the room's connection and is resuming or rejoining it (``rtc.Room`` event ``reconnecting``)."""


@dataclasses.dataclass(frozen=True)
class Reconnected:
    """The SDK got the room back, by a resume or a full reconnect (``rtc.Room`` event ``reconnected``)."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """Something failed; ``reason`` names what."""

    reason: FailureReason


@dataclasses.dataclass(frozen=True)
class Ended:
    """Teardown finished: the room is left and the broker was told (or the end was queued for retry)."""


@dataclasses.dataclass(frozen=True)
class ErrorElapsed:
    """The ERROR display time is over."""


@dataclasses.dataclass(frozen=True)
class Shutdown:
    """The daemon is stopping: end any session, then exit."""


Event: TypeAlias = (
    Press
    | Wake
    | Granted
    | Connected
    | AgentJoined
    | AgentStateChanged
    | Silence
    | MaxDuration
    | WakeGuardEnd
    | AgentLeft
    | AgentEnded
    | Disconnected
    | Reconnecting
    | Reconnected
    | Failure
    | Ended
    | ErrorElapsed
    | Shutdown
)

# ---- effects: what the driver must do -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BeginSession:
    """Ask the broker for a grant and join the room (session number ``session``)."""

    session: int
    woke: bool


@dataclasses.dataclass(frozen=True)
class Teardown:
    """Leave the room and end the session at the broker, then send :class:`Ended`."""

    session: int
    reason: EndReason
    failure: FailureReason | None


@dataclasses.dataclass(frozen=True)
class Hurry:
    """The daemon stops while session ``session`` is being ended: make its close quick (its shutdown bounds)."""

    session: int


@dataclasses.dataclass(frozen=True)
class StartErrorTimer:
    """Send :class:`ErrorElapsed` after ``session.error_display_s``."""


@dataclasses.dataclass(frozen=True)
class Exit:
    """Nothing is open any more: the daemon may exit."""


Effect: TypeAlias = BeginSession | Teardown | Hurry | StartErrorTimer | Exit


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything the state machine knows; observers receive one on every change."""

    state: State = State.IDLE
    agent: AgentState = AgentState.ABSENT
    session: int = 0
    room: str | None = None
    end_reason: EndReason | None = None
    failure: FailureReason | None = None
    stopping: bool = False
    trigger: Trigger | None = None

    @property
    def in_session(self) -> bool:
        """True while a session is open (connecting, live, reconnecting, or being ended)."""
        return self.state in {State.CONNECTING, State.LIVE, State.RECONNECTING, State.ENDING}


_END_EVENTS: dict[type[Event], EndReason] = {
    Silence: EndReason.SILENCE,
    MaxDuration: EndReason.MAX_DURATION,
    WakeGuardEnd: EndReason.WAKE_GUARD,
    AgentLeft: EndReason.AGENT_LEFT,
    AgentEnded: EndReason.AGENT_ENDED,
    Disconnected: EndReason.DISCONNECTED,
    Shutdown: EndReason.SHUTDOWN,
}
#: The session's own clocks: they do not run while the room reconnects (nothing can be heard either way).
_CLOCK_EVENTS = (Silence, MaxDuration, WakeGuardEnd)
_OPEN = frozenset({State.CONNECTING, State.LIVE, State.RECONNECTING})
_PRESS_END = {Source.BUTTON: EndReason.BUTTON, Source.KEYBOARD: EndReason.BUTTON, Source.CONTROL: EndReason.CONTROL}


def _end(snap: Snapshot, reason: EndReason, failure: FailureReason | None = None) -> tuple[Snapshot, list[Effect]]:
    nxt = dataclasses.replace(snap, state=State.ENDING, end_reason=reason, failure=failure)
    return nxt, [Teardown(session=snap.session, reason=reason, failure=failure)]


def transition(snap: Snapshot, event: Event) -> tuple[Snapshot, list[Effect]]:
    """Return the next snapshot and the effects the driver must carry out; events that do not apply are ignored."""
    state = snap.state
    if isinstance(event, Shutdown):
        stopping = dataclasses.replace(snap, stopping=True)
        if state in _OPEN:
            return _end(stopping, EndReason.SHUTDOWN)
        if state == State.ENDING:
            return stopping, [] if snap.stopping else [Hurry(session=snap.session)]
        return dataclasses.replace(stopping, state=State.IDLE), [Exit()]

    if state == State.IDLE or state == State.ERROR:
        if isinstance(event, Press | Wake) and not snap.stopping:
            trigger = Trigger.VOICE if isinstance(event, Wake) else Trigger(event.source.value)
            nxt = Snapshot(state=State.CONNECTING, session=snap.session + 1, agent=AgentState.ABSENT, trigger=trigger)
            return nxt, [BeginSession(session=nxt.session, woke=isinstance(event, Wake))]
        if isinstance(event, Failure):
            return dataclasses.replace(snap, state=State.ERROR, failure=event.reason), [StartErrorTimer()]
        if isinstance(event, ErrorElapsed) and state == State.ERROR:
            return dataclasses.replace(snap, state=State.IDLE), []
        return snap, []

    if state in _OPEN:
        if state == State.RECONNECTING and isinstance(event, _CLOCK_EVENTS):
            return snap, []
        if isinstance(event, Press):
            return _end(snap, _PRESS_END[event.source])
        if isinstance(event, Failure):
            return _end(snap, EndReason.FAILURE, event.reason)
        end_reason = _END_EVENTS.get(type(event))
        if end_reason is not None:
            return _end(snap, end_reason)
        if isinstance(event, Granted):
            return dataclasses.replace(snap, room=event.room), []
        if isinstance(event, Connected) and state == State.CONNECTING:
            return dataclasses.replace(snap, state=State.LIVE), []
        if isinstance(event, Reconnecting) and state == State.LIVE:
            return dataclasses.replace(snap, state=State.RECONNECTING), []
        if isinstance(event, Reconnected) and state == State.RECONNECTING:
            return dataclasses.replace(snap, state=State.LIVE), []
        if isinstance(event, AgentJoined) and snap.agent == AgentState.ABSENT:
            return dataclasses.replace(snap, agent=AgentState.INITIALIZING), []
        if isinstance(event, AgentStateChanged):
            return dataclasses.replace(snap, agent=event.state), []
        return snap, []

    # ENDING: only the end of teardown moves on; everything else waits.
    if isinstance(event, Ended):
        if snap.failure is not None:
            nxt = dataclasses.replace(snap, state=State.ERROR, agent=AgentState.ABSENT)
            effects: list[Effect] = [StartErrorTimer()]
        else:
            nxt = dataclasses.replace(snap, state=State.IDLE, agent=AgentState.ABSENT)
            effects = []
        if snap.stopping:
            return dataclasses.replace(nxt, state=State.IDLE), [Exit()]
        return nxt, effects
    return snap, []
