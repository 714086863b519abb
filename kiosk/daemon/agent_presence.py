"""Following the agent in the session's room: which participant it is, its comings and goings, when it last did what.

The agent is the participant of kind agent that does not publish on behalf of another: an avatar worker joins as kind
agent too, with attribute ``lk.publish_on_behalf`` naming the agent (livekit-agents ``ATTRIBUTE_PUBLISH_ON_BEHALF``).
Its state is its ``lk.agent.state`` attribute (livekit-agents ``ATTRIBUTE_AGENT_STATE``), reported as
:class:`~kiosk.session.AgentStateChanged`; the session snapshot (``Snapshot.agent``) is the one home of that state,
and :class:`AgentActivity` keeps only *when* things happened, for the session's clocks (:mod:`kiosk.daemon.sessionclock`).

A full reconnect removes and re-adds every remote participant on the way (``participant_disconnected`` /
``participant_connected``), which is not the agent leaving: a departure counts only once the room is still connected
:data:`AGENT_LEFT_CONFIRM_S` later with no reconnect in between, and the agent that comes back under a new participant
object is followed there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from livekit import rtc

from kiosk.session import AgentJoined, AgentLeft, AgentState, AgentStateChanged, Event

log = logging.getLogger(__name__)

AGENT_STATE_ATTRIBUTE = "lk.agent.state"
PUBLISH_ON_BEHALF_ATTRIBUTE = "lk.publish_on_behalf"
_BUSY = frozenset({AgentState.THINKING, AgentState.SPEAKING})
#: A room that loses its server reports its participants gone before it reports itself disconnected: the agent's
#: departure counts only if the room is still connected this long after it (s).
AGENT_LEFT_CONFIRM_S = 0.5
#: Agent audio louder than this (RMS of int16 samples, about -49 dBFS) counts as the agent speaking, for the silence
#: timeout.
AUDIBLE_RMS = 120.0


@dataclasses.dataclass
class RoomLink:
    """What the room knows of its own connection, shared with :class:`AgentPresence`."""

    #: False from the SDK's ``reconnecting`` to its ``reconnected`` (or the end).
    up: bool = True
    #: How many times the SDK began reconnecting.
    reconnects: int = 0
    #: True once the session is ending: the agent leaving or the room closing from then on is expected.
    closing: bool = False


@dataclasses.dataclass
class AgentActivity:
    """When the agent last did what: monotonic seconds, 0 while it has not."""

    #: The agent's audio last carried sound (RMS over :data:`AUDIBLE_RMS`).
    last_audio: float = 0.0
    #: The last frame of the agent's audio arrived, audible or not.
    last_frame: float = 0.0
    #: The agent last stopped thinking or speaking.
    last_busy: float = 0.0
    #: The agent's ``lk.agent.state`` last changed.
    state_at: float = 0.0
    #: True once the agent was heard (audible audio) or said it was speaking.
    spoke: bool = False

    def state_changed(self, old: AgentState, new: AgentState, now: float) -> None:
        """Note a change of the agent's state from ``old`` to ``new`` at ``now``."""
        if old in _BUSY and new not in _BUSY:
            self.last_busy = now
        self.state_at = now
        self.spoke = self.spoke or new == AgentState.SPEAKING

    def heard(self, samples: npt.NDArray[np.int16], now: float) -> None:
        """Note a frame of the agent's voice track arriving at ``now``."""
        self.last_frame = now
        if float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) > AUDIBLE_RMS:
            self.last_audio = now
            self.spoke = True


class AgentPresence:
    """The agent of ``room``: reports it joining, its state changing and it leaving through ``on_event``.

    ``agent_state()`` reads the agent's state as the session knows it (the snapshot); ``clock`` (monotonic s) stamps
    :attr:`activity`. The room calls the ``participant_*``, ``attributes_changed``, ``reconnected`` and
    ``disconnected`` methods from the SDK's callbacks of the same names.
    """

    def __init__(
        self,
        *,
        room: rtc.Room,
        link: RoomLink,
        on_event: Callable[[Event], None],
        agent_state: Callable[[], AgentState],
        clock: Callable[[], float],
    ) -> None:
        self._room = room
        self._link = link
        self._on_event = on_event
        self._agent_state = agent_state
        self._now = clock
        self.activity = AgentActivity()
        self.agent: rtc.RemoteParticipant | None = None
        #: Set once the agent is in the room.
        self.present = asyncio.Event()
        self._leaving: asyncio.TimerHandle | None = None

    def participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        """A participant joined (or was there when the room connected, or came back after a full reconnect)."""
        if self._link.closing or not is_agent(participant):
            return
        state = participant.attributes.get(AGENT_STATE_ATTRIBUTE)
        if self.agent is not None:
            if participant.identity == self.agent.identity and participant is not self.agent:
                # The same agent after a full reconnect: the SDK made a new participant object for it.
                log.info("agent %s is back after the reconnect", participant.identity)
                self.agent = participant
                if state and AgentState.parse(state) != self._agent_state():
                    self._state(AgentState.parse(state))
            return
        self.agent = participant
        self.present.set()
        log.info("agent %s joined", participant.identity)
        self._on_event(AgentJoined())
        if state:
            self._state(AgentState.parse(state))

    def participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        """A participant left; the agent's departure is confirmed :data:`AGENT_LEFT_CONFIRM_S` later."""
        if self.agent is None or participant.identity != self.agent.identity or self._link.closing:
            return
        if not self._link.up:
            return  # a full reconnect removes everyone first; whether the agent is back is checked at reconnected
        loop = asyncio.get_running_loop()
        self._leaving = loop.call_later(AGENT_LEFT_CONFIRM_S, self._left, participant.identity, self._link.reconnects)

    def attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        """A participant's attributes changed: the agent's ``lk.agent.state`` is its state."""
        if self._link.closing or self.agent is None or participant.identity != self.agent.identity:
            return
        if AGENT_STATE_ATTRIBUTE in changed:
            self._state(AgentState.parse(changed[AGENT_STATE_ATTRIBUTE]))

    def reconnected(self) -> None:
        """The room is back: an agent that left while the link was down is not reported by a full reconnect (the
        room starts afresh), so check for it :data:`AGENT_LEFT_CONFIRM_S` later."""
        if self.agent is not None:
            asyncio.get_running_loop().call_later(AGENT_LEFT_CONFIRM_S, self._still_here, self.agent.identity)

    def disconnected(self) -> None:
        """The room ended: its end, not the agent leaving, is what happened."""
        if self._leaving is not None:
            self._leaving.cancel()

    def _state(self, state: AgentState) -> None:
        self.activity.state_changed(self._agent_state(), state, self._now())
        self._on_event(AgentStateChanged(state))

    def _left(self, identity: str, reconnects: int) -> None:
        # A full reconnect removes the participants before it reports reconnecting, and may be over within the
        # confirmation time: a reconnect since the departure, or the agent present again, is not a departure.
        if (
            self._link.closing
            or self._room.connection_state != rtc.ConnectionState.CONN_CONNECTED
            or reconnects != self._link.reconnects
            or identity in self._room.remote_participants
        ):
            log.debug("agent %s gone with the room's connection: not counted as leaving", identity)
            return
        log.info("agent %s left", identity)
        self._on_event(AgentLeft())

    def _still_here(self, identity: str) -> None:
        if self._link.closing or not self._link.up or identity in self._room.remote_participants:
            return
        log.info("agent %s left while the room was reconnecting", identity)
        self._on_event(AgentLeft())


def is_agent(participant: rtc.RemoteParticipant) -> bool:
    """The agent itself: kind agent, and not an avatar publishing on its behalf."""
    return participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and not participant.attributes.get(
        PUBLISH_ON_BEHALF_ATTRIBUTE
    )
