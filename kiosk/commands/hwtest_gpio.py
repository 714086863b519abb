"""``kiosk test leds`` and ``kiosk test button``: the terminal side of :mod:`kiosk.hwtest.ledcycle` and ``.button``."""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path
from typing import Any

from kiosk.commands.hwtest_common import CheckFailed, Printer, pin_config, run_async
from kiosk.config import KioskConfig
from kiosk.configfile import EX_CONFIG
from kiosk.hwtest import button, ledcycle
from kiosk.leds import StatusLeds


def run_leds(args: argparse.Namespace, path: Path, config: KioskConfig, pin_factory: Any, out: Printer) -> int:
    """Cycle every state and failure code on the configured LEDs."""
    if config.leds.kind == "none":
        raise CheckFailed(
            EX_CONFIG, f'{path}: leds.kind is "none": set kind and the pins in [leds] first (README, wiring)'
        )
    ring = config.leds.kind == "apa102"
    leds = StatusLeds(config=config.leds, pin_factory=pin_factory, level=voice_like_level)
    stop = threading.Event()
    only = (args.only or "").lower()
    dims = "blink on/off (no PWM on these pins)" if leds.no_pwm else "dim with PWM"
    out.text(f"LEDs: {config.leds.kind} ({_pins(config)}), brightness {config.leds.brightness:g}; they {dims}")

    def on_step(number: int, total: int, step: ledcycle.Step) -> None:
        out.text(f"  [{number:>2}/{total}] {step.name:<36} {step.description}")
        out.data("step", {"number": number, "name": step.name, "pattern": step.description})

    try:
        shown = ledcycle.run_cycle(
            leds=leds,
            each_s=args.each,
            on_step=on_step,
            stop=stop,
            only=lambda step: only in step.name.lower(),
            ring=ring,
        )
    except KeyboardInterrupt:
        shown = 0
    finally:
        leds.close()
    out.data("done", {"shown": shown})
    out.text("done: LEDs off. The failure codes are listed in the README (Hardware and wiring).")
    return 0


def voice_like_level() -> float:
    """A made-up agent voice for the ring's glow (0..1): syllables of about 0.2 s in phrases of about 2 s."""
    t = time.monotonic()
    return max(0.0, math.sin(2 * math.pi * t / 0.4)) * (0.5 + 0.5 * math.sin(2 * math.pi * t / 4) ** 2)


def _pins(config: KioskConfig) -> str:
    leds = config.leds
    if leds.kind == "apa102" and leds.ring is not None:
        where = ", ".join(f"{k} GPIO{v}" for k, v in leds.ring.pins().items())
        return f"{leds.ring.count} APA102 LEDs, colour order {leds.ring.order}: {where}"
    if leds.kind == "single":
        return f"GPIO{leds.pin}"
    if leds.kind == "rgb" and leds.rgb is not None:
        return f"red GPIO{leds.rgb.red}, green GPIO{leds.rgb.green}, blue GPIO{leds.rgb.blue}"
    if leds.per_state is not None:
        return ", ".join(f"{k} GPIO{v}" for k, v in leds.per_state.model_dump().items() if v is not None)
    return "-"


def run_button(args: argparse.Namespace, path: Path, config: KioskConfig, pin_factory: Any, out: Printer) -> int:
    """Watch the button's pin and print each edge with its timing; a summary with advice at the end."""
    trigger = config.trigger
    key = f"{args.which.replace('-', '_')}_pin" if args.which != "button" else "button_pin"
    chosen = args.pin if args.pin is not None else getattr(trigger, key)
    if chosen is None:
        raise CheckFailed(EX_CONFIG, f"{path}: trigger.{key} is not set: set it in [trigger] or pass --pin")
    trigger = pin_config(trigger, button_pin=chosen)
    assert trigger.button_pin is not None
    pull = "pull-up, button to GND" if trigger.button_pull_up else "pull-down, button to 3V3"
    name = "button" if args.which == "button" else f"{args.which} button"
    out.text(
        f"watching the {name} on GPIO{trigger.button_pin} ({pull}; bounce_time_ms "
        f"{trigger.bounce_time_ms}, hold_time_s {trigger.hold_time_s:g}) for {args.seconds:g} s: press, hold and release the button (Ctrl-C stops)"
    )

    def on_line(line: dict[str, Any]) -> None:
        out.text(f"  +{line['t']:7.3f} s  {line['edge']:<5} {line['what']}")
        out.data("edge", line)

    record = run_async(
        lambda stop: button.watch(
            config=trigger,
            seconds=args.seconds,
            on_line=on_line,
            stop=stop,
            max_presses=args.presses,
            pin_factory=pin_factory,
        )
    )
    advice = record.advice(trigger)
    out.data("summary", {**record.__dict__, "advice": advice})
    lengths = ", ".join(f"{s * 1000:.0f} ms" for s in record.press_lengths_s) or "-"
    out.text(f"summary: {record.presses} press(es), {record.holds} hold(s), {record.bounces} bounce(s); held {lengths}")
    out.text(f"advice:  {advice}")
    return 0 if record.edges else 1
