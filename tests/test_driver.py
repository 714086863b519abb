"""The driver and a session run with stub broker and audio: teardown at any moment leaves nothing open."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from kiosk import session as sm
from kiosk.config import KioskConfig
from kiosk.configfile import parse_config as parse_config_text
from kiosk.daemon.driver import Driver
from kiosk.daemon.sessionrun import SessionRun
from kiosk.wakeguard import Refusal, WakeGate

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
) -> tuple[Driver, list[StubCapture]]:
    captures: list[StubCapture] = []
    holder: dict[str, Driver] = {}

    def make_run(number: int, pressed_at: float | None) -> SessionRun:
        capture = StubCapture()
        captures.append(capture)
        return SessionRun(
            number=number,
            pressed_at=pressed_at,
            config=config.session,
            keeper=keeper,  # type: ignore[arg-type]
            audio=StubAudio(),
            capture=capture,  # type: ignore[arg-type]
            on_caption=lambda caption: None,
            trigger=holder["driver"].snapshot.trigger,
        )

    holder["driver"] = Driver(config=config, make_run=make_run, wake_gate=wake_gate)
    return holder["driver"], captures


async def _until_state(driver: Driver, state: sm.State, within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        while driver.snapshot.state != state:
            await asyncio.sleep(0.01)


async def test_second_press_before_the_task_starts() -> None:
    """Press twice in one loop turn: the session ends before it asked the broker anything, and the kiosk idles."""
    keeper = StubKeeper(delay=5)
    driver, captures = _driver(keeper, parse_config_text(CONFIG))
    driver.press(sm.Source.CONTROL)
    driver.press(sm.Source.CONTROL)
    assert driver.snapshot.state == sm.State.ENDING
    await _until_state(driver, sm.State.IDLE)
    assert keeper.started == 0 and captures[0].closed
    assert driver.last_end is not None and driver.last_end.reason == "control"


async def test_teardown_during_broker_start_still_ends_the_session() -> None:
    """A tap while the broker start is in flight waits for the grant and ends that session at the broker."""
    keeper = StubKeeper(delay=0.3)
    driver, _ = _driver(keeper, parse_config_text(CONFIG))
    driver.press(sm.Source.BUTTON)
    await asyncio.sleep(0.05)
    assert keeper.started == 1
    driver.press(sm.Source.BUTTON)
    await _until_state(driver, sm.State.IDLE)
    assert len(keeper.ended) == 1


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
    driver.on_wake_refused = refused.append
    driver.wake(0.0, level_dbfs=-70.0)
    assert driver.snapshot.state == sm.State.IDLE and refused == [Refusal.TOO_QUIET]
    driver.wake(0.0, level_dbfs=-20.0)
    assert driver.snapshot.state == sm.State.CONNECTING and driver.snapshot.trigger == sm.Trigger.VOICE
    driver.dispatch(sm.WakeGuardEnd())
    await _until_state(driver, sm.State.IDLE)
    driver.wake(0.0, level_dbfs=-20.0)
    assert refused == [Refusal.TOO_QUIET, Refusal.BACKOFF]
    status = driver.status()
    assert status["recent"][0]["trigger"] == "voice" and status["recent"][0]["end_reason"] == "wake_guard"
    assert status["wake_guard"]["resting_s"] > 290 and status["counters"]["wake_refused.backoff"] == 1
