"""The session state machine: a transition table plus properties over random event sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.reasons import EndReason, FailureReason
from kiosk.session import (
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
    MaxDuration,
    Press,
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
    """Never two sessions at once; CONNECTING/LIVE leave only through ENDING; ENDING reaches IDLE; shutdown ends first."""
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
        if before.state in {State.CONNECTING, State.LIVE} and snap.state not in {State.CONNECTING, State.LIVE}:
            assert snap.state == State.ENDING
            assert any(isinstance(e, Teardown) for e in effects)
        if before.state == State.ENDING and snap.state != State.ENDING:
            assert isinstance(event, Ended)
            open_sessions.clear()
        if any(isinstance(e, Exit) for e in effects):
            assert not open_sessions, "exit while a session was still open"
    # Draining: from wherever we are, an end, its teardown and the error timer bring the machine to IDLE.
    for event in (Silence(), Ended(), ErrorElapsed()):
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
