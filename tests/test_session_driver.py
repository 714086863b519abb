"""The driver and a session run with stub broker and audio: teardown at any moment leaves nothing open."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from livekit import api
from pydantic import SecretStr

from kiosk import session as sm
from kiosk.broker import ConnectionDetails, EndTicket, OnRoom, SessionKeeper, SessionLedger
from kiosk.config import KioskConfig
from kiosk.configfile import parse_config as parse_config_text
from kiosk.daemon.policy import Policy
from kiosk.daemon.session_driver import RunRequest, SessionDriver
from kiosk.daemon.sessionrun import SessionRun
from kiosk.trigger import ButtonTrigger
from kiosk.wakeguard import Refusal, WakeGate
from tests.fixtures.waiting import until

CONFIG = '[broker]\ndialect = "livekit"\nurl = "https://b.example"\n[session]\nerror_display_s = 0.2\n'


class StubKeeper:
    """A broker keeper whose start takes ``delay`` seconds and then grants a room."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = 0
        self.ended: list[Any] = []

    async def start(self, *, deadline: float | None = None) -> Any:
        """Count, wait, grant."""
        self.started += 1
        await asyncio.sleep(self.delay)
        return SimpleNamespace(grant=SimpleNamespace(room="room-1"))

    async def end(self, session: Any) -> bool:
        """Remember what was ended."""
        self.ended.append(session)
        return True


class StubCapture:
    """A session capture that holds nothing."""

    closed = False

    def close(self) -> None:
        """Close it."""
        self.closed = True


class StubInput:
    """A mixer input."""

    def clear(self) -> None:
        """Nothing queued."""


class StubAudio:
    """The audio engine as a session sees it."""

    last_speech_t = None

    def mixer_input(self, name: str) -> StubInput:
        """Any input."""
        return StubInput()


def _driver(
    keeper: StubKeeper, config: KioskConfig, *, wake_gate: WakeGate | None = None
) -> tuple[SessionDriver, list[StubCapture]]:
    captures: list[StubCapture] = []

    def make_run(request: RunRequest) -> SessionRun:
        capture = StubCapture()
        captures.append(capture)
        return SessionRun(
            number=request.number,
            pressed_at=request.pressed_at,
            config=request.config.session,
            keeper=keeper,  # type: ignore[arg-type]
            audio=StubAudio(),
            capture=capture,  # type: ignore[arg-type]
            on_caption=request.on_caption,
            agent_state=request.agent_state,
            trigger=request.trigger,
        )

    return SessionDriver(config=config, make_run=make_run, wake_gate=wake_gate), captures


async def test_a_button_session_starts_at_the_gpio_edge() -> None:
    """Pin -> ButtonTrigger -> Policy -> driver: the session's press time is the edge's time (gpiozero's mock pins)."""
    from gpiozero.pins.mock import MockFactory

    keeper = StubKeeper(delay=5)
    config = parse_config_text(CONFIG + "[trigger]\nbutton_pin = 17\nbounce_time_ms = 0\n")
    driver, _ = _driver(keeper, config)
    edge_at = time.monotonic() - 0.25  # the edge, a quarter second before the loop gets to it
    factory = MockFactory()
    trigger = ButtonTrigger(
        config=config.trigger,
        loop=asyncio.get_running_loop(),
        on_event=Policy(driver=driver).button,
        pin_factory=factory,
        clock=lambda: edge_at,
    )
    try:
        factory.pin(17).drive_low()
        await until(lambda: driver.run is not None, 5, "the press to start a session", step=0.01)
        assert driver.run is not None and driver.run.times.pressed_at == edge_at
    finally:
        trigger.close()
        factory.close()
        driver.dispatch(sm.Shutdown())
        await driver.wait_idle(5)


async def test_second_press_before_the_task_starts() -> None:
    """Press twice in one loop turn: the session ends before it asked the broker anything, and the kiosk idles."""
    keeper = StubKeeper(delay=5)
    driver, captures = _driver(keeper, parse_config_text(CONFIG))
    driver.press(sm.Source.CONTROL)
    driver.press(sm.Source.CONTROL)
    assert driver.snapshot.state == sm.State.ENDING
    await until(lambda: driver.snapshot.state == sm.State.IDLE, 3, "the driver to idle", step=0.01)
    assert keeper.started == 0 and captures[0].closed
    assert driver.last_end is not None and driver.last_end.reason == "control"


class SlowBroker:
    """A Lyzr-like broker whose start names room-1 after ``delay`` seconds; its ends are remembered."""

    dialect = "lyzr"
    url = "https://b.example"
    identity = "kiosk-t1"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.ended: list[str] = []

    async def start(self, *, deadline: float | None = None, on_room: OnRoom | None = None) -> ConnectionDetails:
        """Wait, name the room (the keeper records it), grant."""
        await asyncio.sleep(self.delay)
        ticket = EndTicket(dialect="lyzr", url=self.url, room="room-1", identity=self.identity)
        if on_room is not None:
            on_room(ticket)
        jwt = api.AccessToken("key", "secret").with_grants(api.VideoGrants(room_join=True, room="room-1")).to_jwt()
        return ConnectionDetails(
            dialect="lyzr",
            server_url="wss://lk.example",
            token=SecretStr(jwt),
            room="room-1",
            identity=self.identity,
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10),
            ticket=ticket,
        )

    async def end(self, session: ConnectionDetails | EndTicket, *, deadline: float | None = None) -> None:
        """Remember the room ended."""
        self.ended.append(session.room)


async def test_teardown_during_broker_start_still_ends_the_session(tmp_path: Path) -> None:
    """A tap while the broker start is in flight: idle at once, and the session the start opens is ended (by the
    keeper, which goes on with the start the run stopped waiting for)."""
    broker = SlowBroker(delay=0.3)
    ledger = SessionLedger(tmp_path)
    keeper = SessionKeeper(broker=broker, ledger=ledger, end_timeout_s=1.0, end_retry_max_s=0.2)  # type: ignore[arg-type]
    driver, _ = _driver(keeper, parse_config_text(CONFIG))  # type: ignore[arg-type]
    driver.press(sm.Source.BUTTON)
    await until(lambda: keeper.starting == 1, 5, "the run's task to ask the broker", step=0.01)
    driver.press(sm.Source.BUTTON)
    await until(lambda: driver.snapshot.state == sm.State.IDLE, 3, "the driver to idle", step=0.01)
    await until(lambda: broker.ended == ["room-1"], 5, "the late session to be ended", step=0.01)
    assert ledger.pending() == []
    await keeper.aclose()


async def test_shutdown_before_the_task_starts_exits() -> None:
    """SIGTERM right after a press: nothing was opened, the driver exits."""
    keeper = StubKeeper(delay=5)
    driver, _ = _driver(keeper, parse_config_text(CONFIG))
    driver.press(sm.Source.BUTTON)
    driver.dispatch(sm.Shutdown())
    async with asyncio.timeout(3):
        await driver.exited.wait()
    assert keeper.started == 0


async def test_a_failing_observer_does_not_stop_the_machine() -> None:
    """An observer that raises is logged; effects still run and the session still ends."""
    keeper = StubKeeper(delay=5)
    driver, _ = _driver(keeper, parse_config_text(CONFIG))

    def broken(old: sm.Snapshot, new: sm.Snapshot) -> None:
        raise OSError("LED pin gone")

    driver.observe(broken)
    driver.press(sm.Source.BUTTON)
    driver.dispatch(sm.Shutdown())
    async with asyncio.timeout(3):
        await driver.exited.wait()


async def test_voice_wakes_pass_the_wake_gate_and_an_unheard_session_rests_it() -> None:
    """A quiet wake is refused; a loud one starts a voice session; its wake-guard end makes the gate refuse the next."""
    config = parse_config_text(CONFIG + "[trigger]\nvoice_wake = true\ncooldown_s = 0\n")
    keeper = StubKeeper(delay=5)
    gate = WakeGate(config=config.trigger)
    driver, _ = _driver(keeper, config, wake_gate=gate)
    refused: list[Refusal] = []
    driver.observe(wake_refusals=refused.append)
    driver.wake(0.0, level_dbfs=-70.0)
    assert driver.snapshot.state == sm.State.IDLE and refused == [Refusal.TOO_QUIET]
    driver.wake(0.0, level_dbfs=-20.0)
    assert driver.snapshot.state == sm.State.CONNECTING and driver.snapshot.trigger == sm.Trigger.VOICE
    driver.dispatch(sm.WakeGuardEnd())
    await until(lambda: driver.snapshot.state == sm.State.IDLE, 3, "the driver to idle", step=0.01)
    driver.wake(0.0, level_dbfs=-20.0)
    assert refused == [Refusal.TOO_QUIET, Refusal.BACKOFF]
    status = driver.status()
    assert status["recent"][0]["trigger"] == "voice" and status["recent"][0]["end_reason"] == "wake_guard"
    assert status["wake_guard"]["resting_s"] > 290 and status["counters"]["wake_refused.backoff"] == 1
