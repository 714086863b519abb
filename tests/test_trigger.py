"""The button through gpiozero's MockFactory: presses and holds reach the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.config import TriggerConfig
from kiosk.trigger import ButtonEvent, ButtonTrigger


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """A fresh mock pin factory per test."""
    mock = MockFactory()
    yield mock
    mock.reset()


async def _next(queue: asyncio.Queue[ButtonEvent]) -> ButtonEvent:
    return await asyncio.wait_for(queue.get(), timeout=2)


async def test_press_and_hold_reach_the_loop(factory: MockFactory) -> None:
    """drive_low() on a pull-up button is a PRESS on the loop; holding past hold_time adds a HOLD."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[ButtonEvent] = asyncio.Queue()
    config = TriggerConfig(button_pin=17, hold_time_s=0.2, bounce_time_ms=0)
    trigger = ButtonTrigger(
        config=config, loop=loop, on_event=lambda event, _t: events.put_nowait(event), pin_factory=factory
    )
    pin = factory.pin(17)
    try:
        pin.drive_low()
        assert await _next(events) == ButtonEvent.PRESS
        assert await _next(events) == ButtonEvent.HOLD
        pin.drive_high()
        await asyncio.sleep(0.05)
        pin.drive_low()
        assert await _next(events) == ButtonEvent.PRESS
        pin.drive_high()
        assert trigger.presses == 2
    finally:
        trigger.close()


async def test_bounce_is_filtered(factory: MockFactory) -> None:
    """Contact bounce within bounce_time gives one press, not several."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[ButtonEvent] = asyncio.Queue()
    config = TriggerConfig(button_pin=4, bounce_time_ms=100, hold_time_s=5)
    trigger = ButtonTrigger(
        config=config, loop=loop, on_event=lambda event, _t: events.put_nowait(event), pin_factory=factory
    )
    pin = factory.pin(4)
    try:
        for _ in range(3):
            pin.drive_low()
            pin.drive_high()
        assert await _next(events) == ButtonEvent.PRESS
        await asyncio.sleep(0.2)
        assert events.empty()
    finally:
        trigger.close()


async def test_release_bounce_is_not_a_second_press(factory: MockFactory) -> None:
    """A driver that does not debounce: the contact bouncing as the button is let go is not a new press."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[ButtonEvent] = asyncio.Queue()
    now = [0.0]
    config = TriggerConfig(button_pin=5, bounce_time_ms=30, hold_time_s=5)
    trigger = ButtonTrigger(
        config=config,
        loop=loop,
        on_event=lambda event, _t: events.put_nowait(event),
        pin_factory=factory,
        clock=lambda: now[0],
    )
    pin = factory.pin(5)
    # (time of the edge in s, drive low = pressed): a press, a release 1 s later that bounces, a real second press.
    script = [(0.0, True), (1.0, False), (1.004, True), (1.009, False), (1.012, True), (1.015, False), (2.0, True)]
    try:
        for t, low in script:
            now[0] = t
            pin.drive_low() if low else pin.drive_high()
        assert await _next(events) == ButtonEvent.PRESS
        assert await _next(events) == ButtonEvent.PRESS
        await asyncio.wait_for(asyncio.sleep(0), timeout=1)  # let any stray hand-off run
        assert events.empty() and trigger.presses == 2
    finally:
        trigger.close()


async def test_each_event_carries_the_time_of_its_edge(factory: MockFactory) -> None:
    """The press and the hold come with the time their edge was seen on gpiozero's thread, not the loop's later time."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[ButtonEvent, float]] = asyncio.Queue()
    config = TriggerConfig(button_pin=6, bounce_time_ms=0, hold_time_s=0.1)
    trigger = ButtonTrigger(
        config=config,
        loop=loop,
        on_event=lambda event, t: events.put_nowait((event, t)),
        pin_factory=factory,
        clock=lambda: 1234.5,
    )
    try:
        factory.pin(6).drive_low()
        assert await asyncio.wait_for(events.get(), 5) == (ButtonEvent.PRESS, 1234.5)
        assert await asyncio.wait_for(events.get(), 5) == (ButtonEvent.HOLD, 1234.5)
    finally:
        trigger.close()


def test_pin_is_required() -> None:
    """A trigger without a pin is refused with the key to set."""
    with pytest.raises(ValueError, match=r"trigger\.button_pin"):
        ButtonTrigger(config=TriggerConfig(), loop=asyncio.new_event_loop(), on_event=lambda *_: None)
