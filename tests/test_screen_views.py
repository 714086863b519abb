"""The screen's state table, failure words, config rules and the feed's caption book-keeping (no sockets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kiosk.config import ScreenConfig
from kiosk.errors import ConfigError
from kiosk.leds import PATTERNS
from kiosk.reasons import FailureReason
from kiosk.screen.feed import MAX_SEGMENTS, ControlFeed
from kiosk.screen.service import read_token
from kiosk.screen.views import FAILURE_WORDS, VIEWS, caption_of, view_of
from kiosk.session import State


def test_every_led_state_has_a_view_and_every_failure_plain_words() -> None:
    """The screen follows the LEDs' table (plus ERROR, which the LEDs show as blink codes) and words every failure."""
    assert set(VIEWS) == set(PATTERNS) | {(State.ERROR, None)}
    assert set(FAILURE_WORDS) == set(FailureReason)
    assert {VIEWS[k] for k in VIEWS} == {
        "ready",
        "connecting",
        "listening",
        "thinking",
        "speaking",
        "reconnecting",
        "ending",
        "failure",
    }


@pytest.mark.parametrize(
    ("event", "key", "in_session"),
    [
        ({"state": "idle"}, "ready", False),
        ({"state": "connecting", "session": 2}, "connecting", True),
        ({"state": "live", "agent": "absent", "session": 2}, "connecting", True),
        ({"state": "live", "agent": "listening", "session": 2}, "listening", True),
        ({"state": "live", "agent": "idle", "session": 2}, "listening", True),
        ({"state": "live", "agent": "thinking", "session": 2}, "thinking", True),
        ({"state": "live", "agent": "speaking", "session": 2}, "speaking", True),
        ({"state": "ending", "reason": "silence", "session": 2}, "ending", True),
        ({"state": "error", "failure": "clock"}, "failure", False),
    ],
)
def test_view_of_each_state(event: dict[str, Any], key: str, in_session: bool) -> None:
    """Each daemon state shows its view; only sessions count as in session."""
    view = view_of(event, labels={})
    assert (view.key, view.in_session) == (key, in_session)


def test_view_carries_only_what_the_page_shows() -> None:
    """A status snapshot's rooms, counters and versions never reach the page; the session number does."""
    status = {
        "state": "live",
        "agent": "speaking",
        "session": {"id": 7, "room": "kiosk-secret-room", "live": True},
        "counters": {"presses": 3},
        "versions": {"kiosk": "1"},
        "token": "eyJhbGciOi",
    }
    shown = view_of(status, labels={"speaking": "Spricht"}).as_json()
    assert shown == {"key": "speaking", "label": "Spricht", "detail": "", "session": 7, "in_session": True}


def test_failure_words_and_unknown_states() -> None:
    """A failure shows plain words (an unknown reason as internal); a state this table lacks is an error."""
    assert "clock" in view_of({"state": "error", "failure": "clock"}, labels={}).detail
    assert "internal" in view_of({"state": "error", "failure": "from-the-future"}, labels={}).detail
    with pytest.raises(ValueError, match="unknown daemon state"):
        view_of({"state": "hibernating"}, labels={})


def test_caption_of_refuses_malformed_events() -> None:
    """A caption needs a known role, text and a segment id."""
    good = {"role": "agent", "text": "Hi", "segment_id": "s", "final": True, "session": 1}
    assert caption_of(good) == {"session": 1, "role": "agent", "text": "Hi", "segment_id": "s", "final": True}
    assert caption_of({**good, "role": "system"}) is None
    assert caption_of({**good, "text": None}) is None


def test_feed_keeps_this_sessions_captions_and_clears_them_for_the_next_visitor() -> None:
    """Interim updates replace a segment; captions outside a session are dropped; a new session or ready clears."""
    feed = ControlFeed(socket=Path("/nonexistent"), labels={})
    sent: list[dict[str, Any]] = []
    queue = feed.bus.subscribe()

    def caption(text: str, segment: str, final: bool = True) -> None:
        feed.handle({"type": "caption", "role": "visitor", "text": text, "segment_id": segment, "final": final})

    caption("before any session", "s0")
    feed.handle({"type": "state", "state": "live", "agent": "listening", "session": 1})
    caption("(speech)", "s1", final=False)
    caption("Where is the lift?", "s1")
    assert [c["text"] for c in feed.snapshot()["captions"]] == ["Where is the lift?"]
    for index in range(MAX_SEGMENTS + 5):
        caption(f"line {index}", f"n{index}")
    assert len(feed.captions) == MAX_SEGMENTS
    feed.handle({"type": "state", "state": "connecting", "session": 2})
    assert feed.captions == {}
    caption("second visitor", "t1")
    feed.handle({"type": "state", "state": "idle", "session": 2})
    assert feed.captions == {} and feed.view.key == "ready"
    while not queue.empty():
        sent.append(queue.get_nowait())
    assert [m["event"] for m in sent].count("reset") == 2


def test_screen_config_refuses_an_open_bind_without_a_token() -> None:
    """Loopback by default; another address needs allow_remote and a token source; labels are checked."""
    assert ScreenConfig().bind == "127.0.0.1"
    with pytest.raises(ValidationError, match="allow_remote"):
        ScreenConfig(bind="0.0.0.0")
    with pytest.raises(ValidationError, match="token_file or token_env"):
        ScreenConfig(bind="0.0.0.0", allow_remote=True)
    assert ScreenConfig(bind="0.0.0.0", allow_remote=True, token_env="T").allow_remote
    assert ScreenConfig(bind="::1").bind == "::1"
    with pytest.raises(ValidationError, match="unknown label bogus"):
        ScreenConfig(labels={"bogus": "x"})
    with pytest.raises(ValidationError, match="language"):
        ScreenConfig(language="en_US; drop")


def test_read_token_names_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing, unset or short token is a config error that says how to make a good one."""
    assert read_token(ScreenConfig()) is None
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(ScreenConfig(token_file=tmp_path / "none"))
    monkeypatch.delenv("KIOSK_T", raising=False)
    with pytest.raises(ConfigError, match="KIOSK_T is not set"):
        read_token(ScreenConfig(token_env="KIOSK_T"))
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 16") as info:
        read_token(ScreenConfig(token_file=tmp_path / "short"))
    assert "abc" not in str(info.value)
    (tmp_path / "good").write_text("a" * 24 + "\n")
    assert read_token(ScreenConfig(token_file=tmp_path / "good")) == "a" * 24
