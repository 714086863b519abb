"""``kiosk test leds``: every state and every failure code in turn, through the daemon's own LED observer."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from kiosk.leds import FAILURE_CODES, MUTED, PATTERNS, Color, Pattern, StatusLeds, pattern_for
from kiosk.session import AgentState, Snapshot, State

_COLOURS: dict[Color, str] = {
    (0.0, 0.0, 0.0): "off",
    (1.0, 1.0, 1.0): "white",
    (0.0, 1.0, 0.0): "green",
    (0.0, 0.2, 1.0): "blue",
    (0.0, 0.8, 0.8): "cyan",
    (1.0, 0.55, 0.0): "amber",
    (1.0, 0.0, 0.0): "red",
    (1.0, 0.0, 0.8): "magenta",
    (1.0, 0.9, 0.0): "yellow",
    (1.0, 0.3, 0.0): "orange",
}


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing shown: its name, the snapshot that shows it, and the pattern in words."""

    name: str
    snapshot: Snapshot
    description: str
    cycle_s: float
    muted: bool = False


def describe(pattern: Pattern, *, ring: bool = False) -> str:
    """A pattern in an installer's words, e.g. ``"blink blue 0.15 s on / 0.15 s off"``; ``ring``: as a ring shows it."""
    colour = _COLOURS.get(pattern.color, str(pattern.color))
    if ring and pattern.ring == "spin":
        return f"a {colour} arc spinning round ({2 * (pattern.on_s + pattern.off_s):g} s a turn)"
    if ring and pattern.ring == "level":
        return f"{colour} glow following the agent's voice (here: a made-up voice)"
    level = f" at {pattern.level:.0%}" if pattern.level < 1 else ""
    if pattern.kind == "solid":
        return f"steady {colour}{level}"
    if pattern.kind == "code":
        flashes = "flash" if pattern.count == 1 else "flashes"
        return f"{pattern.count} short {colour} {flashes}, a pause, repeated"
    return f"{pattern.kind} {colour}{level} ({pattern.on_s:g} s up / {pattern.off_s:g} s down)"


def _cycle_s(pattern: Pattern) -> float:
    if pattern.kind == "code":
        return pattern.count * (pattern.on_s + pattern.off_s) + pattern.pause_s
    return pattern.on_s + pattern.off_s


def steps(*, ring: bool = False) -> list[Step]:
    """Every state (each live agent state too), the muted microphone, then every failure code in blink-count order."""
    out: list[Step] = []
    for state, agent in PATTERNS:
        snap = Snapshot(state=state, agent=agent or AgentState.ABSENT)
        name = str(state) if agent is None else f"{state}, agent {agent}"
        out.append(Step(name, snap, describe(pattern_for(snap), ring=ring), _cycle_s(pattern_for(snap))))
    out.append(Step("idle, microphone muted", Snapshot(state=State.IDLE), describe(MUTED), _cycle_s(MUTED), True))
    for reason, (count, _) in sorted(FAILURE_CODES.items(), key=lambda item: item[1][0]):
        snap = Snapshot(state=State.ERROR, failure=reason)
        pattern = pattern_for(snap)
        out.append(Step(f"error code {count}: {reason}", snap, describe(pattern), _cycle_s(pattern)))
    return out


def run_cycle(
    *,
    leds: StatusLeds,
    each_s: float,
    on_step: Callable[[int, int, Step], None],
    stop: threading.Event,
    whole_codes: bool = True,
    only: Callable[[Step], bool] = lambda step: True,
    ring: bool = False,
) -> int:
    """Show each step for ``each_s`` (a failure code at least one whole cycle if ``whole_codes``); return how many.

    ``ring``: describe the steps as an LED ring shows them.
    """
    chosen = [step for step in steps(ring=ring) if only(step)]
    for number, step in enumerate(chosen, start=1):
        on_step(number, len(chosen), step)
        leds.set_muted(step.muted)
        leds.update(step.snapshot)
        hold = max(each_s, step.cycle_s) if whole_codes and step.snapshot.state == State.ERROR else each_s
        if stop.wait(hold):
            return number
    leds.set_muted(False)
    leds.update(Snapshot(state=State.IDLE))
    return len(chosen)
