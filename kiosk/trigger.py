"""The push button: a debounced gpiozero ``Button`` whose edges are handed to the asyncio loop.

gpiozero calls ``when_pressed``/``when_held`` on its own thread; this module only forwards them with
``loop.call_soon_threadsafe``, so the session's single writer (on the loop) decides what a press means: start when
idle, end when connecting or live. The press is reported on the falling edge, not on release, so press-to-live
latency does not include how long the visitor keeps the finger down.

``kiosk test button`` passes ``on_edge`` to see every raw edge: the pin driver's own debouncing is then left off and
the same loop-side debouncing the daemon relies on decides which edges count as presses.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from kiosk.config import TriggerConfig

log = logging.getLogger(__name__)


class ButtonEvent(enum.StrEnum):
    """What the button did."""

    PRESS = "press"
    HOLD = "hold"


class ButtonTrigger:
    """Owns the gpiozero Button and forwards its edges to ``on_event`` on the event loop."""

    def __init__(
        self,
        *,
        config: TriggerConfig,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[ButtonEvent, float], None],
        pin_factory: Any = None,
        on_edge: Callable[[bool, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open the button on ``config.button_pin``.

        ``on_event(event, t)`` is called on the loop with each press or hold and the time of its edge, taken on
        gpiozero's thread (``clock()``, s): the press time a session's pre-roll and press-to-live count from, not the
        moment a busy loop got to it. ``on_edge(pressed, t)`` also receives every raw edge (``kiosk test button``: the driver's own debouncing is
        then off, so bounces show); ``clock`` timestamps edges (s) on gpiozero's thread.
        """
        from gpiozero import Button

        if config.button_pin is None:
            raise ValueError("trigger.button_pin is not set")
        self._loop = loop
        self._on_event = on_event
        self._on_edge = on_edge
        self._clock = clock
        self._bounce_s = config.bounce_time_ms / 1000
        self._last_edge = -1e9
        self.presses = 0
        driver_bounce = config.bounce_time_ms / 1000 if config.bounce_time_ms and on_edge is None else None
        self._button = Button(
            config.button_pin,
            pull_up=config.button_pull_up,
            bounce_time=driver_bounce,
            hold_time=config.hold_time_s,
            pin_factory=pin_factory,
        )
        self._button.when_pressed = self._pressed
        self._button.when_released = self._released
        self._button.when_held = self._held
        log.info("button on GPIO%d (pull-%s)", config.button_pin, "up" if config.button_pull_up else "down")

    # gpiozero's thread: timestamp the edge and hand off only.
    def _pressed(self) -> None:
        self._loop.call_soon_threadsafe(self._deliver, ButtonEvent.PRESS, self._clock())

    def _released(self) -> None:
        self._loop.call_soon_threadsafe(self._deliver, None, self._clock())

    def _held(self) -> None:
        self._loop.call_soon_threadsafe(self._deliver, ButtonEvent.HOLD, self._clock())

    def _deliver(self, event: ButtonEvent | None, t: float) -> None:
        if event != ButtonEvent.HOLD:
            if self._on_edge is not None:
                self._on_edge(event == ButtonEvent.PRESS, t)
            # Not every pin driver debounces (the mock and some GPIO expanders do not): repeat it on the loop, for
            # press and release alike. An edge within bounce_time of the previous edge is contact bounce.
            bounced = t - self._last_edge < self._bounce_s
            self._last_edge = t
            if event is None or bounced:
                return
            self.presses += 1
        self._on_event(event, t)

    def close(self) -> None:
        """Release the pin; no events are delivered afterwards."""
        self._button.when_pressed = None
        self._button.when_released = None
        self._button.when_held = None
        self._button.close()
