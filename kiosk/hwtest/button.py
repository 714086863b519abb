"""``kiosk test button``: the daemon's button trigger on the real pin, every edge shown with its timing.

The pin driver's debouncing is left off so bounces show; the trigger's own loop-side debouncing (the daemon's, with
``trigger.bounce_time_ms``) decides which edges count as presses, and gpiozero reports holds after
``trigger.hold_time_s`` as in the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from kiosk.config import TriggerConfig
from kiosk.trigger import ButtonEvent, ButtonTrigger

#: Two counted presses closer than this are probably one press with a long bounce.
DOUBLE_PRESS_S = 0.15


@dataclasses.dataclass
class ButtonLog:
    """What the watch saw: counted presses, holds, bounces, and the gaps that matter (seconds)."""

    presses: int = 0
    holds: int = 0
    bounces: int = 0
    edges: int = 0
    shortest_gap_s: float | None = None
    closest_presses_s: float | None = None
    press_lengths_s: list[float] = dataclasses.field(default_factory=list)

    def advice(self, config: TriggerConfig) -> str:
        """What the figures mean for ``trigger.bounce_time_ms``."""
        if self.edges == 0:
            return (
                f"no edge seen on GPIO{config.button_pin}: check the wiring (button between the pin and GND "
                "with button_pull_up = true) and the pin number (BCM numbering)"
            )
        if self.closest_presses_s is not None and self.closest_presses_s < DOUBLE_PRESS_S:
            wanted = max(config.bounce_time_ms * 2, round(self.closest_presses_s * 1000) + 20)
            return (
                f"two presses only {self.closest_presses_s * 1000:.0f} ms apart: probably one press bouncing longer "
                f"than trigger.bounce_time_ms = {config.bounce_time_ms}; try bounce_time_ms = {wanted}"
            )
        if self.bounces:
            return (
                f"bounces are handled: the shortest gap was {(self.shortest_gap_s or 0) * 1000:.0f} ms, inside "
                f"trigger.bounce_time_ms = {config.bounce_time_ms}"
            )
        return "clean edges, no bounces seen"


async def watch(
    *,
    config: TriggerConfig,
    seconds: float,
    on_line: Callable[[dict[str, Any]], None],
    stop: asyncio.Event | None = None,
    max_presses: int = 0,
    pin_factory: Any = None,
) -> ButtonLog:
    """Watch ``config.button_pin`` for ``seconds`` (or until ``max_presses`` presses were released, or ``stop``).

    ``on_line`` receives one dict per event: ``t`` (seconds since the start), ``edge`` (down, up or held) and
    ``what`` (press #n, bounce, released, hold). gpiozero errors (pin busy, no GPIO) propagate.
    """
    loop = asyncio.get_running_loop()
    done = stop or asyncio.Event()
    record = ButtonLog()
    start = loop.time()
    last: dict[str, float] = {}
    pending: list[dict[str, Any]] = []

    def emit() -> None:
        while pending:
            on_line(pending.pop(0))

    def on_edge(pressed: bool, t: float) -> None:
        record.edges += 1
        line: dict[str, Any] = {"t": round(t - start, 3), "edge": "down" if pressed else "up"}
        gap = t - last["edge"] if "edge" in last else None
        last["edge"] = t
        if gap is not None and gap < config.bounce_time_ms / 1000:
            record.bounces += 1
            record.shortest_gap_s = gap if record.shortest_gap_s is None else min(record.shortest_gap_s, gap)
            line["what"] = f"bounce, {gap * 1000:.1f} ms after the last edge"
        elif pressed:
            line["what"] = "edge"
        elif "down" in last:
            length = t - last.pop("down")
            record.press_lengths_s.append(length)
            line["what"] = f"released after {length * 1000:.0f} ms"
            if max_presses and record.presses >= max_presses:
                loop.call_soon(done.set)
        else:
            line["what"] = "released"
        pending.append(line)
        # The trigger decides after this call whether the edge is a press: print once it has.
        loop.call_soon(emit)

    def on_event(event: ButtonEvent, _t: float) -> None:
        now = loop.time()
        if event == ButtonEvent.PRESS:
            record.presses += 1
            if "press" in last:
                gap = now - last["press"]
                record.closest_presses_s = (
                    gap if record.closest_presses_s is None else min(record.closest_presses_s, gap)
                )
            last["press"] = last["down"] = now
            if pending:
                pending[-1]["what"] = f"press #{record.presses}"
        else:
            record.holds += 1
            pending.append(
                {
                    "t": round(now - start, 3),
                    "edge": "held",
                    "what": f"hold ({config.hold_time_s:g} s): the daemon would do hold_action = {config.hold_action!r}",
                }
            )
            loop.call_soon(emit)

    trigger = ButtonTrigger(config=config, loop=loop, on_event=on_event, pin_factory=pin_factory, on_edge=on_edge)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), seconds)
    finally:
        trigger.close()
        emit()
    return record
