"""``kiosk test leds`` on an APA102 ring (gpiozero's mock SPI) and ``kiosk test button`` on the extra buttons."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.commands import hwtest
from tests.fixtures.hwtest import write_config
from tests.fixtures.ring import RingProbe, pixels
from tests.fixtures.waiting import until

RING = '[leds]\nkind = "apa102"\n\n[leds.ring]\ncount = 4\nspi_port = 0\nspi_device = 0\n'
BUTTONS = "[trigger]\nbutton_pin = 17\nvolume_up_pin = 22\nvolume_down_pin = 23\nmute_pin = 24\n"


def test_leds_check_names_the_ring_and_spins_it(tmp_path: Path, mock_pins: MockFactory, capsys: Any) -> None:
    """The LED check says which ring it drives and shows connecting as a blue arc that moves; then all off."""
    probe = RingProbe(clock=11, data=10, select=8, factory=mock_pins)
    config = str(write_config(tmp_path, RING))
    code = hwtest.main(["leds", "--config", config, "--each", "0.5", "--only", "connecting"], pin_factory=mock_pins)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 APA102 LEDs, colour order bgr" in out and "SPI0 clock) GPIO11" in out
    assert "a blue arc spinning round" in out
    shown = [pixels(frame, 4) for frame in probe.frames]
    heads = {max(range(4), key=lambda i: ring[i][2]) for ring in shown if any(p != (0, 0, 0) for p in ring)}
    assert len(heads) >= 2, "the arc moved"
    assert shown[-1] == [(0, 0, 0)] * 4


def test_leds_check_shows_the_mute_on_the_ring(tmp_path: Path, mock_pins: MockFactory, capsys: Any) -> None:
    """The muted-microphone step flashes the whole ring red."""
    probe = RingProbe(clock=11, data=10, select=8, factory=mock_pins)
    config = str(write_config(tmp_path, RING))
    assert hwtest.main(["leds", "--config", config, "--each", "0.3", "--only", "muted"], pin_factory=mock_pins) == 0
    assert "idle, microphone muted" in capsys.readouterr().out
    assert [(153, 0, 0)] * 4 in [pixels(frame, 4) for frame in probe.frames]


async def test_button_check_watches_the_mute_button(
    tmp_path: Path, mock_pins: MockFactory, capsys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``--which mute`` watches trigger.mute_pin and counts its press."""
    caplog.set_level(logging.INFO, logger="kiosk.trigger")
    config = str(write_config(tmp_path, BUTTONS))
    pin = mock_pins.pin(24)
    check = asyncio.create_task(
        asyncio.to_thread(
            hwtest.main, ["button", "--config", config, "--which", "mute", "--presses", "1"], pin_factory=mock_pins
        )
    )
    # The trigger logs once its button is built and its callbacks are set: a press before that would be lost.
    await until(lambda: "button on GPIO24" in caplog.text, 10, "the button's log line", step=0.005)
    pin.drive_low()
    await asyncio.sleep(0.1)  # held longer than bounce_time_ms, so the release is not taken for a bounce
    pin.drive_high()
    assert await asyncio.wait_for(check, 30) == 0
    out = capsys.readouterr().out
    assert "watching the mute button on GPIO24" in out and "1 press(es)" in out


def test_button_check_names_a_missing_extra_button(tmp_path: Path, capsys: Any) -> None:
    """``--which volume-up`` without trigger.volume_up_pin exits 78 naming that key."""
    assert hwtest.main(["button", "--config", str(write_config(tmp_path)), "--which", "volume-up"]) == 78
    assert "trigger.volume_up_pin is not set" in capsys.readouterr().err
