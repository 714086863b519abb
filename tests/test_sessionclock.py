"""The live session's clocks: silence, maximum duration, a stuck agent, and the pause while the room reconnects."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kiosk import session as sm
from kiosk.config import SessionConfig
from kiosk.daemon.agent_presence import AgentActivity
from kiosk.daemon.linkdown import Outages
from kiosk.daemon.sessionclock import LiveClock
from kiosk.reasons import FailureReason

CONFIG = SessionConfig(silence_timeout_s=10.0, max_duration_s=60.0, network_lost_s=20.0, agent_stuck_s=15.0)


@dataclass
class Room:
    """The agent's state and when it last did what (monotonic seconds, 0 for never)."""

    last_agent_audio: float = 0.0
    last_agent_busy: float = 0.0
    agent_state_at: float = 0.0
    agent_state: sm.AgentState = sm.AgentState.LISTENING


@dataclass
class Speech:
    """The engine's last speech."""

    last_speech_t: float | None = None


def clock(room: Room, outages: Outages | None = None, speech: float | None = None) -> LiveClock:
    """A clock for a session live at 100 s whose agent joined at 100 s."""
    return LiveClock(
        number=1,
        config=CONFIG,
        agent=AgentActivity(
            last_audio=room.last_agent_audio, last_busy=room.last_agent_busy, state_at=room.agent_state_at
        ),
        agent_state=lambda: room.agent_state,
        audio=Speech(speech),
        live_at=100.0,
        agent_at=100.0,
        outages=outages or Outages(),
        woke=False,
        clock=lambda: 100.0,
    )


def test_silence_counts_from_the_last_speech() -> None:
    """Quiet for the silence timeout after the visitor's last words ends the session; a moment before it does not."""
    c = clock(Room(), speech=105.0)
    assert c.due(114.9) is None
    assert c.due(115.0) == sm.Silence()


@pytest.mark.parametrize("state", [sm.AgentState.SPEAKING, sm.AgentState.THINKING])
def test_an_agent_stuck_in_a_busy_state_with_no_audio_counts_as_silent(state: sm.AgentState) -> None:
    """The claim keeps the session open for agent_stuck_s after the agent's last sign of life, then it is silence
    (livekit/agents#3427: before, the session ran to max_duration_s)."""
    room = Room(agent_state=state, agent_state_at=110.0, last_agent_audio=108.0)
    c = clock(room, speech=105.0)
    assert c.due(124.9) is None, "a credible claim must keep the session open"
    assert c.last_activity(124.9) == 124.9
    # The claim stops counting at 125 (15 s); silence counts from the claim's start, so it is due at once.
    assert c.due(125.0) == sm.Silence()
    assert c.last_activity(125.0) == 110.0


def test_an_agent_whose_audio_keeps_coming_is_not_stuck() -> None:
    """Speaking with audio arriving keeps the session open however long the speech."""
    room = Room(agent_state=sm.AgentState.SPEAKING, agent_state_at=110.0, last_agent_audio=139.0)
    assert clock(room).due(140.0) is None


def test_the_clocks_stand_still_while_the_room_reconnects_and_the_outage_has_its_own_bound() -> None:
    """During an outage no silence or maximum-duration end; afterwards they count on, minus the outage; an outage
    longer than network_lost_s is network_lost."""
    outages = Outages()
    c = clock(Room(), outages=outages, speech=105.0)
    outages.down(112.0)
    assert c.due(131.9) is None, "no silence end while reconnecting"
    assert c.due(132.0) == sm.Failure(FailureReason.NETWORK_LOST)
    outages.up(131.0)  # back after 19 s: 7 s of quiet before, so 3 s to go
    assert c.due(133.9) is None
    assert c.due(134.0) == sm.Silence()
    # The maximum duration leaves the outage out too: 60 s of live time is reached at 179 s, not 160 s.
    busy = clock(Room(last_agent_audio=178.9), outages=outages)
    assert busy.due(178.9) is None
    assert busy.due(179.0) == sm.MaxDuration()


def test_next_check_names_the_deadline_of_each_end() -> None:
    """Asked when to look again, the clock names the silence, stuck-agent, outage and maximum-duration deadlines
    (within its one-second look-ahead), so the run sleeps until them rather than polling."""
    c = clock(Room(), speech=105.0)
    assert c.next_check(114.5) == 115.0, "silence: 10 s after the last speech"
    assert c.next_check(110.0) == 111.0, "never more than MAX_CHECK_S ahead"
    stuck = clock(Room(agent_state=sm.AgentState.SPEAKING, agent_state_at=110.0, last_agent_audio=108.0))
    assert stuck.next_check(124.5) == 125.0, "a busy claim stops being credible 15 s after the last sign of life"
    outages = Outages()
    down = clock(Room(), outages=outages, speech=105.0)
    outages.down(112.0)
    assert down.next_check(131.5) == 132.0, "network_lost 20 s into the outage"
    assert clock(Room(last_agent_audio=159.9)).next_check(159.9) == 160.0, "the maximum duration"


@pytest.mark.parametrize("speech", [None, 101.0, 117.5])
@pytest.mark.parametrize("state", [sm.AgentState.LISTENING, sm.AgentState.SPEAKING])
@pytest.mark.parametrize("outage", [None, (104.0, 109.0), (118.0, None)])
def test_no_end_falls_due_before_the_next_check(
    speech: float | None, state: sm.AgentState, outage: tuple[float, float | None] | None
) -> None:
    """With nothing new happening, due() finds no end before next_check() and finds it at next_check() when one is
    due there: the run that sleeps until next_check() is never late by more than the float's last bit."""
    outages = Outages()
    if outage is not None:
        outages.down(outage[0])
        if outage[1] is not None:
            outages.up(outage[1])
    c = clock(Room(agent_state=state, agent_state_at=102.0, last_agent_audio=103.0), outages=outages, speech=speech)
    now = 119.0
    for _ in range(200):
        if c.due(now) is not None:
            break
        later = c.next_check(now)
        assert later > now
        step = (later - now) / 4
        assert all(c.due(now + step * k) is None for k in range(1, 4)), f"an end fell due before {later}"
        now = later
    else:
        pytest.fail("no end within 200 checks")
