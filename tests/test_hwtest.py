"""``kiosk test leds|button`` on gpiozero's mock pins, the level meter, and the daemon or a process holding a device."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero import LED
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk.audio.vad import VoiceActivity
from kiosk.commands import hwtest
from kiosk.config import TriggerConfig
from kiosk.daemon.control_socket import ControlServer, EventBus
from kiosk.hwtest import ledcycle
from kiosk.hwtest.button import watch
from kiosk.hwtest.meter import LevelMeter
from kiosk.leds import FAILURE_CODES, PATTERNS
from tests.fixtures.hwtest import write_config
from tests.fixtures.waiting import until

LEDS = '[leds]\nkind = "single"\npin = 18\n'


@pytest.fixture
def pwm_factory() -> Iterator[MockFactory]:
    """Mock pins with PWM."""
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


@pytest.fixture
def plain_factory() -> Iterator[MockFactory]:
    """Mock pins without PWM (like gpiozero's native driver)."""
    factory = MockFactory()
    yield factory
    factory.reset()


def test_steps_cover_every_state_and_failure_code() -> None:
    """The LED check shows every pattern of the table and every failure code, each with a name."""
    steps = ledcycle.steps()
    assert len(steps) == len(PATTERNS) + 1 + len(FAILURE_CODES)
    assert [step.name for step in steps if step.muted] == ["idle, microphone muted"]
    names = [step.name for step in steps]
    assert len(set(names)) == len(names)
    for count, _ in FAILURE_CODES.values():
        assert any(name.startswith(f"error code {count}: ") for name in names)
    assert "steady green at 15%" in steps[0].description


def test_leds_named_and_dimmed_with_pwm(tmp_path: Path, pwm_factory: MockFactory, capsys: Any) -> None:
    """With PWM every live state is named on the terminal and the pin takes levels between off and full."""
    code = hwtest.main(
        ["leds", "--config", str(write_config(tmp_path, LEDS)), "--each", "0.1", "--only", "live"],
        pin_factory=pwm_factory,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "they dim with PWM" in out
    for agent in ("absent", "initializing", "idle", "listening", "thinking", "speaking"):
        assert f"live, agent {agent}" in out
    values = {round(float(s.state), 3) for s in pwm_factory.pin(18).states}
    assert any(0.0 < v < 1.0 for v in values)


def test_leds_blink_on_off_without_pwm(tmp_path: Path, plain_factory: MockFactory, capsys: Any) -> None:
    """Without PWM the LED still shows every pattern, with only full on and off."""
    code = hwtest.main(
        ["leds", "--config", str(write_config(tmp_path, LEDS)), "--each", "0.1", "--only", "live"],
        pin_factory=plain_factory,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "blink on/off (no PWM on these pins)" in out
    states = [bool(s.state) for s in plain_factory.pin(18).states]
    assert {float(s.state) for s in plain_factory.pin(18).states} <= {0.0, 1.0}
    assert states.count(True) >= 2


def test_failure_code_shown_for_a_whole_cycle(tmp_path: Path, pwm_factory: MockFactory, capsys: Any) -> None:
    """A failure code is held for one whole cycle even with a short --each: its flashes can be counted."""
    code = hwtest.main(
        ["leds", "--config", str(write_config(tmp_path, LEDS)), "--each", "0.01", "--only", "error code 3:"],
        pin_factory=pwm_factory,
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "[ 1/1] error code 3: broker_timeout" in out
    assert "3 short red flashes" in out
    rises = [s for s in pwm_factory.pin(18).states if float(s.state) == 1.0]
    assert len(rises) >= 3


def test_leds_not_configured_names_the_key(tmp_path: Path, capsys: Any) -> None:
    """With leds.kind = "none" the check exits 78 and says what to set."""
    assert hwtest.main(["leds", "--config", str(write_config(tmp_path))]) == 78
    assert 'leds.kind is "none"' in capsys.readouterr().err


def test_pin_held_by_another_process_is_named(tmp_path: Path, pwm_factory: MockFactory, capsys: Any) -> None:
    """A pin already in use gives exit 75 and a plain message, not a traceback."""
    holder = LED(18, pin_factory=pwm_factory)
    try:
        code = hwtest.main(["leds", "--config", str(write_config(tmp_path, LEDS))], pin_factory=pwm_factory)
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert code == 75
    assert "the LED pins is busy" in err and "systemctl stop kiosk" in err


class _Daemon:
    def status(self) -> dict[str, Any]:
        return {"state": "idle"}

    def press(self) -> dict[str, Any]:
        return {}

    async def say(self, text: str) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("device", ["mic", "speaker", "leds", "button"])
async def test_running_daemon_is_named(tmp_path: Path, device: str, capsys: Any) -> None:
    """While the daemon answers on its control socket, every check exits 75 and says how to stop it."""
    config = write_config(tmp_path, LEDS + "[trigger]\nbutton_pin = 17\n")
    server = ControlServer(path=tmp_path / "control.sock", mode=0o600, controller=_Daemon(), events=EventBus())
    await server.start()
    try:
        code = await asyncio.wait_for(asyncio.to_thread(hwtest.main, [device, "--config", str(config)]), 30)
    finally:
        await server.close()
    err = capsys.readouterr().err
    assert code == 75
    assert "the kiosk daemon is running (idle" in err and "sudo systemctl stop kiosk" in err


async def test_button_presses_holds_and_bounces() -> None:
    """Raw edges are shown: bounces on press and release, a release with its length, a hold; presses counted once."""
    factory = MockFactory()
    pin = factory.pin(17)
    lines: list[dict[str, Any]] = []
    config = TriggerConfig(button_pin=17, bounce_time_ms=200, hold_time_s=0.3)
    task = asyncio.create_task(
        watch(config=config, seconds=60, on_line=lines.append, max_presses=2, pin_factory=factory)
    )
    try:
        await until(lambda: pin.pull == "up", 10, "the pull-up", step=0.005)
        pin.drive_low()
        pin.drive_high()
        pin.drive_low()
        await until(lambda: len(lines) >= 3, 10, "3 lines", step=0.005)
        await asyncio.sleep(0.25)  # longer than the bounce window, so the release is not a bounce
        pin.drive_high()
        pin.drive_low()  # the release bounces: not a press
        pin.drive_high()
        await until(lambda: len(lines) >= 6, 10, "6 lines", step=0.005)
        await asyncio.sleep(0.25)
        pin.drive_low()
        await until(lambda: any(line["edge"] == "held" for line in lines), 10, "a held edge", step=0.005)
        pin.drive_high()
        record = await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        factory.reset()
    whats = [line["what"] for line in lines]
    assert whats[0] == "press #1"
    assert whats[1].startswith("bounce") and whats[2].startswith("bounce")
    assert whats[3].startswith("released after")
    assert whats[4].startswith("bounce") and whats[5].startswith("bounce")
    assert "press #2" in whats and any(w.startswith("hold (0.3 s)") for w in whats)
    assert (record.presses, record.holds, record.bounces) == (2, 1, 4)
    assert "bounces are handled" in record.advice(config)
    assert record.press_lengths_s[1] >= 0.3


def test_button_without_pin_names_the_key(tmp_path: Path, capsys: Any) -> None:
    """No trigger.button_pin and no --pin: exit 78 naming the key."""
    assert hwtest.main(["button", "--config", str(write_config(tmp_path))]) == 78
    assert "trigger.button_pin is not set" in capsys.readouterr().err


def test_meter_reads_level_peak_clipping_and_speech_flag() -> None:
    """100 ms readings: a full-scale square clips, a -20 dBFS sine reads about -23 dBFS RMS and -20 dBFS peak."""
    vad = VoiceActivity(aggressiveness=3, onset_ms=120, offset_ms=600, wake_ms=400)
    meter = LevelMeter(vad=vad)
    t = np.arange(480) / 48_000
    sine = np.round(np.sin(2 * np.pi * 1000 * t) * 3277).astype(np.int16)
    readings = [meter.push(sine, i / 100) for i in range(20)]
    got = [r for r in readings if r is not None]
    assert len(got) == 2
    assert got[-1].level_dbfs == pytest.approx(-23.0, abs=0.2)
    assert got[-1].peak_dbfs == pytest.approx(-20.0, abs=0.2)
    assert got[-1].clipped == 0 and "CLIP" not in got[-1].line()
    square = np.full(480, 32767, dtype=np.int16)
    last = [meter.push(square, 1 + i / 100) for i in range(10)][-1]
    assert last is not None and last.clipped == 4800 and last.line().endswith("CLIP")
    summary = meter.summary("test")
    assert not summary.ok and summary.verdict.startswith("clipping")
