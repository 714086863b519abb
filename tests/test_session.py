"""The session state machine: a transition table plus properties over random event sequences."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.reasons import EndReason, FailureReason
from kiosk.session import (
    AgentEnded,
    AgentJoined,
    AgentLeft,
    AgentState,
    AgentStateChanged,
    BeginSession,
    Connected,
    Disconnected,
    Ended,
    ErrorElapsed,
    Event,
    Exit,
    Failure,
    Granted,
    Hurry,
    MaxDuration,
    Press,
    Reconnected,
    Reconnecting,
    Shutdown,
    Silence,
    Snapshot,
    Source,
    StartErrorTimer,
    State,
    Teardown,
    Trigger,
    Wake,
    WakeGuardEnd,
    transition,
)

I, C, L, E, X = State.IDLE, State.CONNECTING, State.LIVE, State.ENDING, State.ERROR  # noqa: E741
R = State.RECONNECTING

TABLE: list[tuple[State, Event, State]] = [
    (I, Press(), C),
    (I, Wake(), C),
    (I, Granted("r"), I),
    (I, Connected(), I),
    (I, Silence(), I),
    (I, Ended(), I),
    (I, Failure(FailureReason.AUDIO_DEVICE), X),
    (C, Granted("r"), C),
    (C, Connected(), L),
    (C, Press(), E),
    (C, Wake(), C),
    (C, Failure(FailureReason.BROKER_TIMEOUT), E),
    (C, Shutdown(), E),
    (C, Disconnected(), E),
    (L, AgentJoined(), L),
    (L, AgentStateChanged(AgentState.SPEAKING), L),
    (L, Silence(), E),
    (L, MaxDuration(), E),
    (L, Press(), E),
    (L, AgentLeft(), E),
    (L, Disconnected(), E),
    (L, Failure(FailureReason.AGENT_NO_SHOW), E),
    (L, Connected(), L),
    (L, Wake(), L),
    (L, AgentEnded(), E),
    (L, Reconnecting(), R),
    (L, Reconnected(), L),
    (C, Reconnecting(), C),
    (C, Reconnected(), C),
    (I, Reconnecting(), I),
    (E, Reconnecting(), E),
    (E, Reconnected(), E),
    (R, Reconnected(), L),
    (R, Reconnecting(), R),
    (R, Silence(), R),
    (R, MaxDuration(), R),
    (R, WakeGuardEnd(), R),
    (R, AgentStateChanged(AgentState.LISTENING), R),
    (R, Connected(), R),
    (R, Press(), E),
    (R, Press(Source.CONTROL), E),
    (R, Failure(FailureReason.NETWORK_LOST), E),
    (R, Failure(FailureReason.DUPLICATE_IDENTITY), E),
    (R, AgentLeft(), E),
    (R, AgentEnded(), E),
    (R, Disconnected(), E),
    (R, Shutdown(), E),
    (E, Press(), E),
    (E, Silence(), E),
    (E, Failure(FailureReason.INTERNAL), E),
    (E, Shutdown(), E),
    (X, ErrorElapsed(), I),
    (X, Press(), C),
    (X, Silence(), X),
]


@pytest.mark.parametrize(("start", "event", "expected"), TABLE, ids=lambda v: getattr(v, "name", repr(v)))
def test_transition_table(start: State, event: Event, expected: State) -> None:
    """Each (state, event) pair leads to the state in the table."""
    snap, _ = transition(Snapshot(state=start, session=1), event)
    assert snap.state == expected


def test_happy_path_effects() -> None:
    """A press begins a session; silence tears it down with the reason; Ended returns to idle."""
    snap, effects = transition(Snapshot(), Press())
    assert effects == [BeginSession(session=1, woke=False)]
    snap, _ = transition(snap, Granted("room-1"))
    snap, _ = transition(snap, Connected())
    snap, _ = transition(snap, AgentJoined())
    assert snap.agent == AgentState.INITIALIZING
    snap, _ = transition(snap, AgentStateChanged(AgentState.LISTENING))
    assert (snap.state, snap.agent, snap.room) == (State.LIVE, AgentState.LISTENING, "room-1")
    snap, effects = transition(snap, Silence())
    assert effects == [Teardown(session=1, reason=EndReason.SILENCE, failure=None)]
    snap, effects = transition(snap, Ended())
    assert (snap.state, effects, snap.end_reason) == (State.IDLE, [], EndReason.SILENCE)


def test_failure_shows_error_then_idle() -> None:
    """A failure while connecting ends the session, shows ERROR, then returns to IDLE when the timer elapses."""
    snap, _ = transition(Snapshot(), Wake())
    snap, effects = transition(snap, Failure(FailureReason.BROKER_UNAUTHORIZED))
    assert effects == [Teardown(session=1, reason=EndReason.FAILURE, failure=FailureReason.BROKER_UNAUTHORIZED)]
    snap, effects = transition(snap, Ended())
    assert (snap.state, effects, snap.failure) == (State.ERROR, [StartErrorTimer()], FailureReason.BROKER_UNAUTHORIZED)
    snap, _ = transition(snap, ErrorElapsed())
    assert snap.state == State.IDLE


@pytest.mark.parametrize(("source", "reason"), [(Source.BUTTON, EndReason.BUTTON), (Source.CONTROL, EndReason.CONTROL)])
def test_press_while_live_names_its_source(source: Source, reason: EndReason) -> None:
    """A tap while live ends with the reason of what tapped."""
    _, effects = transition(Snapshot(state=State.LIVE, session=3), Press(source))
    assert effects == [Teardown(session=3, reason=reason, failure=None)]


def test_shutdown_while_live_ends_then_exits() -> None:
    """Shutdown in LIVE tears down first; Exit comes only after Ended; no new session starts meanwhile."""
    snap, effects = transition(Snapshot(state=State.LIVE, session=2), Shutdown())
    assert effects == [Teardown(session=2, reason=EndReason.SHUTDOWN, failure=None)]
    snap, effects = transition(snap, Press())
    assert effects == []
    snap, effects = transition(snap, Ended())
    assert (snap.state, effects) == (State.IDLE, [Exit()])
    snap, effects = transition(snap, Press())
    assert (snap.state, effects) == (State.IDLE, [])


def test_shutdown_while_ending_hurries_the_end_once() -> None:
    """A stop while the session is being ended asks the driver to make its close quick, once; Exit after Ended."""
    ending = Snapshot(state=State.ENDING, session=4, end_reason=EndReason.SILENCE)
    snap, effects = transition(ending, Shutdown())
    assert (snap.state, snap.stopping, effects) == (State.ENDING, True, [Hurry(session=4)])
    snap, effects = transition(snap, Shutdown())
    assert effects == []
    assert transition(snap, Ended()) == (dataclasses.replace(snap, state=State.IDLE), [Exit()])


def test_agent_state_parse_is_lenient() -> None:
    """Unknown or missing agent states count as initializing."""
    assert AgentState.parse("speaking") == AgentState.SPEAKING
    assert AgentState.parse("dancing") == AgentState.INITIALIZING
    assert AgentState.parse(None) == AgentState.INITIALIZING


EVENTS = st.one_of(
    st.sampled_from(
        [
            Press(),
            Press(Source.CONTROL),
            Wake(),
            Connected(),
            AgentJoined(),
            Silence(),
            MaxDuration(),
            AgentLeft(),
            Disconnected(),
            AgentEnded(),
            Reconnecting(),
            Reconnected(),
            Ended(),
            ErrorElapsed(),
            Granted("room"),
        ]
    ),
    st.builds(AgentStateChanged, st.sampled_from(list(AgentState))),
    st.builds(Failure, st.sampled_from(list(FailureReason))),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(EVENTS, max_size=60), st.booleans())
def test_properties_over_random_sequences(events: list[Event], shut: bool) -> None:
    """Never two sessions at once; an open session (connecting, live, reconnecting) leaves only through ENDING or
    between LIVE and RECONNECTING; ENDING reaches IDLE; shutdown ends first."""
    snap = Snapshot()
    open_sessions: set[int] = set()
    if shut:
        events = [*events, Shutdown()]
    for event in events:
        before = snap
        snap, effects = transition(snap, event)
        for effect in effects:
            if isinstance(effect, BeginSession):
                assert not open_sessions, "a second session began while one was open"
                open_sessions.add(effect.session)
            if isinstance(effect, Teardown):
                assert effect.session in open_sessions
        opened = {State.CONNECTING, State.LIVE, State.RECONNECTING}
        if before.state in opened and snap.state not in opened:
            assert snap.state == State.ENDING
            assert any(isinstance(e, Teardown) for e in effects)
        if before.state == State.ENDING and snap.state != State.ENDING:
            assert isinstance(event, Ended)
            open_sessions.clear()
        if any(isinstance(e, Exit) for e in effects):
            assert not open_sessions, "exit while a session was still open"
    # Draining: from wherever we are, an end, its teardown and the error timer bring the machine to IDLE.
    for event in (Reconnected(), Silence(), Ended(), ErrorElapsed()):
        snap, _ = transition(snap, event)
    assert snap.state == State.IDLE
    if shut:
        assert snap.stopping


def test_the_snapshot_says_what_started_the_session_and_the_wake_guard_ends_it() -> None:
    """A wake starts a voice session, a press one named by its source; WakeGuardEnd ends with reason wake_guard."""
    woken, _ = transition(Snapshot(), Wake())
    pressed, _ = transition(Snapshot(), Press(Source.CONTROL))
    assert woken.trigger == Trigger.VOICE and pressed.trigger == Trigger.CONTROL
    live, _ = transition(woken, Connected())
    ending, effects = transition(live, WakeGuardEnd())
    assert ending.state == State.ENDING and ending.end_reason == EndReason.WAKE_GUARD
    assert effects == [Teardown(session=1, reason=EndReason.WAKE_GUARD, failure=None)]


def test_the_room_reconnecting_keeps_the_session_and_the_agents_last_state() -> None:
    """LIVE -> RECONNECTING -> LIVE keeps session, room and agent state; no effect, so no teardown and no new start."""
    live = Snapshot(state=State.LIVE, session=4, room="r", agent=AgentState.SPEAKING)
    down, effects = transition(live, Reconnecting())
    assert (down.state, down.agent, down.room, effects) == (State.RECONNECTING, AgentState.SPEAKING, "r", [])
    assert down.in_session
    back, effects = transition(down, Reconnected())
    assert (back, effects) == (live, [])


@pytest.mark.parametrize(
    ("event", "reason", "failure"),
    [
        (Failure(FailureReason.NETWORK_LOST), EndReason.FAILURE, FailureReason.NETWORK_LOST),
        (Press(), EndReason.BUTTON, None),
        (Shutdown(), EndReason.SHUTDOWN, None),
        (AgentEnded(), EndReason.AGENT_ENDED, None),
    ],
)
def test_ends_while_reconnecting_tear_down_with_their_reason(
    event: Event, reason: EndReason, failure: FailureReason | None
) -> None:
    """A session ended while its room reconnects is torn down (the broker end) with the end's own reason."""
    snap, effects = transition(Snapshot(state=State.RECONNECTING, session=7), event)
    assert snap.state == State.ENDING
    assert effects == [Teardown(session=7, reason=reason, failure=failure)]


def test_the_agent_ending_the_call_is_an_orderly_end() -> None:
    """AgentEnded ends with reason agent_ended and no failure: back to IDLE (normal LED), not ERROR."""
    snap, effects = transition(Snapshot(state=State.LIVE, session=2), AgentEnded())
    assert effects == [Teardown(session=2, reason=EndReason.AGENT_ENDED, failure=None)]
    snap, effects = transition(snap, Ended())
    assert (snap.state, effects, snap.failure) == (State.IDLE, [], None)
