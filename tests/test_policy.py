"""The button's hold policy and the after-session policy (session limit, memory recycling), on a fake driver."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kiosk import session as sm
from kiosk.config import KioskConfig
from kiosk.configfile import parse_config
from kiosk.daemon.policy import EX_TEMPFAIL, Policy, current_rss_mb
from kiosk.daemon.sessionsummary import SessionSummary
from kiosk.reasons import FailureReason
from kiosk.trigger import ButtonEvent

BROKER = '[broker]\ndialect = "livekit"\nurl = "https://b.example"\n'


def config(text: str = "") -> KioskConfig:
    """A config with the broker section and ``text``."""
    return parse_config(BROKER + text)


@dataclass
class FakeDriver:
    """Presses toggle between idle and connecting; every event asked for is kept."""

    config: KioskConfig = field(default_factory=config)
    snapshot: sm.Snapshot = field(default_factory=sm.Snapshot)
    sessions_done: int = 0
    presses: int = 0
    events: list[sm.Event] = field(default_factory=list)
    #: The ``at`` of each press.
    pressed_at: list[float | None] = field(default_factory=list)

    def press(self, source: sm.Source, *, at: float | None = None) -> None:
        """Start a session when idle, otherwise end it."""
        self.presses += 1
        self.pressed_at.append(at)
        state = sm.State.CONNECTING if self.snapshot.state == sm.State.IDLE else sm.State.ENDING
        self.snapshot = sm.Snapshot(state=state, session=1)

    def dispatch(self, event: sm.Event) -> None:
        """Keep the event."""
        self.events.append(event)


def summary() -> SessionSummary:
    """A finished session."""
    return SessionSummary(
        number=1, room="r", press_to_live_ms=1.0, duration_s=1.0, end_reason="silence", preconnect_s=0, transcript=[]
    )


def test_a_button_press_reaches_the_driver_with_its_edge_time() -> None:
    """The press starts where the visitor pressed (the GPIO edge's time), not where the loop handled it."""
    driver = FakeDriver()
    Policy(driver=driver).button(ButtonEvent.PRESS, 12.5)
    assert driver.pressed_at == [12.5]


def test_a_hold_after_the_press_that_started_the_session_keeps_it() -> None:
    """The visitor pressed and keeps the button down: the session stays."""
    driver = FakeDriver()
    policy = Policy(driver=driver)
    policy.button(ButtonEvent.PRESS)
    policy.button(ButtonEvent.HOLD)
    assert driver.presses == 1 and driver.snapshot.state == sm.State.CONNECTING and policy.exit_code == 0


def test_a_hold_on_a_press_during_a_session_ends_it() -> None:
    """A press while live that is held ends the session (hold_action = "end")."""
    driver = FakeDriver(snapshot=sm.Snapshot(state=sm.State.LIVE, session=1))
    policy = Policy(driver=driver)
    driver.press = lambda source, at=None: setattr(driver, "presses", driver.presses + 1)  # type: ignore[method-assign]
    policy.button(ButtonEvent.PRESS)
    policy.button(ButtonEvent.HOLD)
    assert driver.presses == 2 and not driver.events


def test_a_hold_with_restart_asks_systemd_for_a_restart() -> None:
    """hold_action = "restart": exit code 75 and a shutdown, read at the hold (so a reload counts at once)."""
    driver = FakeDriver()
    policy = Policy(driver=driver)
    driver.config = config('[trigger]\nhold_action = "restart"\n')
    policy.button(ButtonEvent.HOLD)
    assert policy.exit_code == EX_TEMPFAIL and driver.events == [sm.Shutdown()]


@pytest.mark.parametrize(
    ("limit", "rss", "code", "stops"),
    [(0, 10_000.0, 0, False), (100, 99.0, 0, False), (100, 100.0, EX_TEMPFAIL, True), (100, 512.0, EX_TEMPFAIL, True)],
)
def test_memory_recycling_between_visitors(limit: int, rss: float, code: int, stops: bool) -> None:
    """Past daemon.recycle_rss_mb (0 = never) the daemon shuts down after the session with exit 75."""
    driver = FakeDriver(config=config(f"[daemon]\nrecycle_rss_mb = {limit}\n"))
    seen: list[SessionSummary] = []
    policy = Policy(driver=driver, on_summary=seen.append, rss_mb=lambda: rss)
    policy.session_done(summary())
    assert len(seen) == 1 and policy.exit_code == code and (driver.events == [sm.Shutdown()]) == stops


def test_a_session_limit_stops_cleanly() -> None:
    """max_sessions reached: shut down with exit 0 (kiosk demo and the benchmarks)."""
    driver = FakeDriver(sessions_done=2)
    policy = Policy(driver=driver, max_sessions=2, rss_mb=lambda: 0.0)
    policy.session_done(summary())
    assert driver.events == [sm.Shutdown()] and policy.exit_code == 0


def test_this_process_memory_is_read() -> None:
    """VmRSS of a running Python is tens of MB at least."""
    assert current_rss_mb() > 10


def test_a_press_while_the_microphone_is_missing_fails_as_audio_device_without_a_session() -> None:
    """The microphone is missing: a press dispatches an audio_device failure and starts nothing; once it is back, a
    press starts a session; a press during a session still ends it."""
    driver = FakeDriver()
    missing: list[str | None] = ["the microphone is missing"]
    policy = Policy(driver=driver, audio_missing=lambda: missing[0])
    policy.button(ButtonEvent.PRESS)
    assert driver.presses == 0 and driver.events == [sm.Failure(FailureReason.AUDIO_DEVICE)]
    missing[0] = None
    policy.press(sm.Source.CONTROL)
    assert driver.presses == 1 and driver.snapshot.state == sm.State.CONNECTING
    missing[0] = "gone again"
    policy.press(sm.Source.CONTROL)
    assert driver.presses == 2 and driver.snapshot.state == sm.State.ENDING
