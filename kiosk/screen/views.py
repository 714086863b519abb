"""What the screen shows for each daemon event: one table of states, in the LEDs' terms, and plain failure words.

The page gets only what it shows: a view key, words and the session number; captions with role, text, segment and
final flag. Nothing else of the daemon's status (rooms, counters, versions) reaches the browser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from kiosk.reasons import FailureReason
from kiosk.session import AgentState, State

ViewKey = Literal[
    "ready", "connecting", "listening", "thinking", "speaking", "reconnecting", "ending", "failure", "offline"
]

#: The page's words in English; ``[screen.labels]`` replaces any of them.
DEFAULT_LABELS: dict[str, str] = {
    "ready": "Ready",
    "connecting": "Connecting",
    "listening": "Listening",
    "thinking": "Thinking",
    "speaking": "Speaking",
    "reconnecting": "Reconnecting",
    "ending": "Ending",
    "failure": "Something went wrong",
    "offline": "Starting up",
    "start": "Start",
    "end": "End",
    "send": "Send",
    "placeholder": "Type a message",
    "visitor": "You",
    "agent": "Assistant",
}

#: The LED table (:data:`kiosk.leds.PATTERNS`) in the page's terms: each (state, agent state) shows one view.
VIEWS: dict[tuple[State, AgentState | None], ViewKey] = {
    (State.IDLE, None): "ready",
    (State.CONNECTING, None): "connecting",
    (State.LIVE, AgentState.ABSENT): "connecting",
    (State.LIVE, AgentState.INITIALIZING): "connecting",
    (State.LIVE, AgentState.IDLE): "listening",
    (State.LIVE, AgentState.LISTENING): "listening",
    (State.LIVE, AgentState.THINKING): "thinking",
    (State.LIVE, AgentState.SPEAKING): "speaking",
    (State.RECONNECTING, None): "reconnecting",
    (State.ENDING, None): "ending",
    (State.ERROR, None): "failure",
}

#: Plain words for each failure, for a visitor (the installer reads the LED's blink code or ``kiosk status``).
FAILURE_WORDS: dict[FailureReason, str] = {
    FailureReason.AUDIO_DEVICE: "The microphone or speaker is not working.",
    FailureReason.BROKER_UNREACHABLE: "The assistant service cannot be reached.",
    FailureReason.BROKER_TIMEOUT: "The assistant service did not answer in time.",
    FailureReason.BROKER_UNAUTHORIZED: "This kiosk is not allowed to use the assistant service.",
    FailureReason.BROKER_REJECTED: "The assistant service turned the call down.",
    FailureReason.BROKER_ERROR: "The assistant service had a problem.",
    FailureReason.BROKER_MALFORMED: "The assistant service sent an answer the kiosk cannot read.",
    FailureReason.CLOCK: "The kiosk's clock is wrong.",
    FailureReason.CONNECT_FAILED: "The call could not be connected.",
    FailureReason.CONNECT_TIMEOUT: "The call took too long to connect.",
    FailureReason.AGENT_NO_SHOW: "The assistant did not join the call.",
    FailureReason.SECRET_UNREADABLE: "The kiosk cannot read its access key.",
    FailureReason.INTERNAL: "The kiosk had an internal problem.",
    FailureReason.FIRST_WORDS_TIMEOUT: "The call stopped responding.",
    FailureReason.UPLINK_TIMEOUT: "The call stopped responding.",
    FailureReason.NETWORK_LOST: "The network connection was lost.",
    FailureReason.DUPLICATE_IDENTITY: "Another kiosk took over this kiosk's call.",
    FailureReason.ROOM_CLOSED: "The call was closed by the assistant service.",
    FailureReason.STATE_DIR: "The kiosk cannot save its records.",
    FailureReason.BROKER_UNRESOLVABLE: "The assistant service cannot be found on the network.",
}
RETRY_WORDS = "Please try again in a moment."
OFFLINE_WORDS = "The kiosk is starting. This page reconnects by itself."
CONNECTING_WORDS = {State.CONNECTING: "Calling the assistant", State.LIVE: "Waiting for the assistant"}
RECONNECTING_WORDS = "The network dropped. Please wait: the call comes back by itself."


@dataclasses.dataclass(frozen=True)
class View:
    """One screen state: ``key`` picks colour and layout, ``label`` is the big word, ``detail`` the line under it."""

    key: ViewKey
    label: str
    detail: str
    session: int | None
    in_session: bool

    def as_json(self) -> dict[str, Any]:
        """The JSON the page receives."""
        return dataclasses.asdict(self)


def view_of(event: Mapping[str, Any], *, labels: Mapping[str, str]) -> View:
    """The view for a daemon ``state`` event (or the status snapshot that opens an ``events`` stream).

    Raises:
        ValueError: the event names no state this table knows (a newer daemon): the caller shows it as a failure.
    """
    try:
        state = State(str(event.get("state")))
        agent = AgentState.parse(event.get("agent")) if state == State.LIVE else None
        key = VIEWS[(state, agent)]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown daemon state {event.get('state')!r}/{event.get('agent')!r}") from exc
    words = {**DEFAULT_LABELS, **labels}
    detail = ""
    if key == "failure":
        try:
            reason = FailureReason(str(event.get("failure")))
        except ValueError:
            reason = FailureReason.INTERNAL
        detail = f"{FAILURE_WORDS[reason]} {RETRY_WORDS}"
    elif key == "connecting":
        detail = CONNECTING_WORDS.get(state, "")
    elif key == "reconnecting":
        detail = RECONNECTING_WORDS
    return View(
        key=key,
        label=words[key],
        detail=detail,
        session=session_number(event),
        in_session=state in {State.CONNECTING, State.LIVE, State.RECONNECTING, State.ENDING},
    )


def offline_view(*, labels: Mapping[str, str]) -> View:
    """What the page shows while the daemon's control socket does not answer."""
    return View(
        key="offline",
        label={**DEFAULT_LABELS, **labels}["offline"],
        detail=OFFLINE_WORDS,
        session=None,
        in_session=False,
    )


def session_number(event: Mapping[str, Any]) -> int | None:
    """The session number of a state event (an int) or of a status snapshot (``session.id``)."""
    session = event.get("session")
    if isinstance(session, Mapping):
        session = session.get("id")
    return session if isinstance(session, int) and not isinstance(session, bool) else None


def caption_of(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The page's part of a ``caption`` event, or None when it is malformed."""
    role, text, segment = event.get("role"), event.get("text"), event.get("segment_id")
    if role not in {"visitor", "agent"} or not isinstance(text, str) or not isinstance(segment, str):
        return None
    return {
        "session": session_number(event),
        "role": role,
        "text": text,
        "segment_id": segment,
        "final": bool(event.get("final")),
    }
