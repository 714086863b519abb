"""Status LEDs through gpiozero's MockFactory with PWM pins: the pin history follows the state table."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk.config import LedConfig, PerStatePins, RgbPins
from kiosk.leds import FAILURE_CODES, PATTERNS, TICK_S, StatusLeds, levels, pattern_for
from kiosk.reasons import FailureReason
from kiosk.session import AgentState, Snapshot, State


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """A mock pin factory whose pins support PWM."""
    mock = MockFactory(pin_class=MockPWMPin)
    yield mock
    mock.reset()


def _values(pin: MockPWMPin) -> list[float]:
    return [round(float(s.state), 3) for s in pin.states]


def played(leds: StatusLeds, key: State | None = None, ticks: int = 300) -> list[Any]:
    """The first ``ticks`` values of what gpiozero was asked to play on an LED (its ``source``), rounded.

    Stopping the device's source thread first makes this exact on a loaded machine: no wall time is involved.
    """
    device = leds.devices[key]
    stream = device.source
    assert stream is not None, "the LED shows a steady level, not a pattern"
    device.source = None
    return [
        tuple(round(float(c), 3) for c in v) if isinstance(v, tuple) else round(float(v), 3)
        for v in itertools.islice(stream, ticks)
    ]


def flash_groups(values: list[float], pause_ticks: int) -> list[int]:
    """Flashes per group in a cyclic on/off stream, groups split by an off run of at least ``pause_ticks``."""
    start = next(i for i in range(len(values)) if values[i] == 0 and all(v == 0 for v in values[i : i + pause_ticks]))
    groups, flashes, off_run = [], 0, 0
    for prev, value in itertools.pairwise(values[start:]):
        off_run = off_run + 1 if value == 0 else 0
        if value and not prev:
            flashes += 1
        if off_run == pause_ticks and flashes:
            groups.append(flashes)
            flashes = 0
    return groups


def test_every_state_and_failure_has_a_pattern() -> None:
    """The table covers every state, every live agent state and every failure reason, with distinct codes."""
    for state in (State.IDLE, State.CONNECTING, State.RECONNECTING, State.ENDING):
        assert pattern_for(Snapshot(state=state))
    for agent in AgentState:
        assert pattern_for(Snapshot(state=State.LIVE, agent=agent))
    assert set(FAILURE_CODES) == set(FailureReason)
    counts = [count for count, _ in FAILURE_CODES.values()]
    assert len(set(counts)) == len(counts)
    assert len(PATTERNS) >= 9


def test_single_led_idle_is_dim_and_connecting_blinks(factory: MockFactory) -> None:
    """A single LED: idle is a dim steady level; connecting toggles between full and off."""
    leds = StatusLeds(config=LedConfig(kind="single", pin=18, brightness=0.5), pin_factory=factory)
    pin = factory.pin(18)
    try:
        leds.update(Snapshot(state=State.IDLE))
        assert pin.state == pytest.approx(0.075)
        history = _values(pin)
        assert history[0] == 0.0 and history[1] == pytest.approx(0.075)
        leds.update(Snapshot(state=State.CONNECTING))
        stream = played(leds)
        assert set(stream) == {0.0, 0.5}  # brightness caps the level
        # The table's blink, from wherever gpiozero's thread had got to.
        expected = [round(v, 3) for v in itertools.islice(levels(PATTERNS[(State.CONNECTING, None)], 0.5), 2 * 300)]
        assert any(expected[k : k + len(stream)] == stream for k in range(300))
    finally:
        leds.close()


def test_same_pattern_is_not_restarted(factory: MockFactory) -> None:
    """Repeated snapshots with the same pattern leave the running pattern alone."""
    leds = StatusLeds(config=LedConfig(kind="single", pin=18), pin_factory=factory)
    pin = factory.pin(18)
    try:
        leds.update(Snapshot(state=State.LIVE, agent=AgentState.LISTENING))
        before = len(pin.states)
        leds.update(Snapshot(state=State.LIVE, agent=AgentState.LISTENING, room="r"))
        assert len(pin.states) == before
        assert pin.state == 1.0
    finally:
        leds.close()


@pytest.mark.parametrize("reason", [FailureReason.BROKER_TIMEOUT, FailureReason.AGENT_NO_SHOW])
def test_failure_blink_code_counts(factory: MockFactory, reason: FailureReason) -> None:
    """ERROR flashes the failure's own count, pauses, and repeats."""
    leds = StatusLeds(config=LedConfig(kind="single", pin=18), pin_factory=factory)
    pin = factory.pin(18)
    count, _ = FAILURE_CODES[reason]
    try:
        leds.update(Snapshot(state=State.ERROR, failure=reason))
        assert pin.state == 1.0  # the first flash is asked for at once
        stream = played(leds, ticks=4 * round((count * 0.3 + 1.0) / TICK_S))
    finally:
        leds.close()
    assert set(stream) == {0.0, 1.0}
    assert flash_groups(stream, pause_ticks=round(1.0 / TICK_S)) == [count, count, count]


def test_rgb_led_uses_colour_per_state(factory: MockFactory) -> None:
    """An RGB LED shows green when listening and red when a broker failure is shown."""
    config = LedConfig(kind="rgb", rgb=RgbPins(red=22, green=23, blue=24))
    leds = StatusLeds(config=config, pin_factory=factory)
    red, green, blue = factory.pin(22), factory.pin(23), factory.pin(24)
    try:
        leds.update(Snapshot(state=State.LIVE, agent=AgentState.LISTENING))
        assert (red.state, green.state, blue.state) == (0, 1.0, 0)
        leds.update(Snapshot(state=State.ERROR, failure=FailureReason.BROKER_UNAUTHORIZED))
        stream = played(leds)
        assert set(stream) == {(1.0, 0.0, 0.0), (0.0, 0.0, 0.0)}
    finally:
        leds.close()


def test_per_state_leds_light_one_at_a_time(factory: MockFactory) -> None:
    """One LED per state: only the current state's LED is lit; ENDING shows on the live LED."""
    config = LedConfig(kind="per-state", per_state=PerStatePins(idle=5, connecting=6, live=13, error=19))
    leds = StatusLeds(config=config, pin_factory=factory)
    pins = {name: factory.pin(n) for name, n in (("idle", 5), ("connecting", 6), ("live", 13), ("error", 19))}
    try:
        leds.update(Snapshot(state=State.LIVE, agent=AgentState.SPEAKING))
        assert pins["idle"].state == 0 and pins["error"].state == 0
        assert max(played(leds, State.LIVE)) == 1.0
        leds.update(Snapshot(state=State.LIVE, agent=AgentState.THINKING))
        leds.update(Snapshot(state=State.IDLE))
        assert pins["idle"].state == pytest.approx(0.15)
        assert pins["live"].state == 0
    finally:
        leds.close()


def test_active_low_inverts_the_pin(factory: MockFactory) -> None:
    """With active_high = false the pin is low when the LED is fully on."""
    leds = StatusLeds(config=LedConfig(kind="single", pin=18, active_high=False), pin_factory=factory)
    try:
        leds.update(Snapshot(state=State.LIVE, agent=AgentState.LISTENING))
        assert factory.pin(18).state == 0.0
    finally:
        leds.close()


def test_pulse_levels_rise_and_fall() -> None:
    """A pulse rises smoothly to the level and falls back, scaled by brightness."""
    from kiosk.leds import Pattern

    values = list(zip(range(40), levels(Pattern("pulse", on_s=0.2, off_s=0.2), 0.5), strict=False))
    peak = max(v for _, v in values)
    assert peak == pytest.approx(0.5, abs=0.01)
    assert values[0][1] == 0.0


def test_without_pwm_patterns_blink_on_and_off() -> None:
    """Pins without PWM: the single LED is only ever full on or off, dim idle is on, codes still count exactly."""
    plain = MockFactory()
    leds = StatusLeds(config=LedConfig(kind="single", pin=18, brightness=0.5), pin_factory=plain)
    pin = plain.pin(18)
    try:
        assert leds.no_pwm == {None}
        leds.update(Snapshot(state=State.IDLE))
        assert pin.state is True or pin.state == 1
        leds.update(Snapshot(state=State.ERROR, failure=FailureReason.BROKER_UNAUTHORIZED))
        stream = played(leds, ticks=400)
        assert set(stream) == {0.0, 1.0}
        assert flash_groups(stream, pause_ticks=round(1.0 / TICK_S))[:2] == [4, 4]  # the code's 4 flashes
        assert {float(s.state) for s in pin.states} <= {0.0, 1.0}
    finally:
        leds.close()
        plain.reset()


def test_rgb_without_pwm_shows_full_colours() -> None:
    """An RGB LED on pins without PWM falls back to on/off colours; with PWM it keeps dimming."""
    plain = MockFactory()
    leds = StatusLeds(config=LedConfig(kind="rgb", rgb=RgbPins(red=22, green=23, blue=24)), pin_factory=plain)
    try:
        assert leds.no_pwm == {None}
        leds.update(Snapshot(state=State.IDLE))
        assert (plain.pin(22).state, plain.pin(23).state, plain.pin(24).state) == (0, 1, 0)
    finally:
        leds.close()
        plain.reset()
    pwm = MockFactory(pin_class=MockPWMPin)
    leds = StatusLeds(config=LedConfig(kind="rgb", rgb=RgbPins(red=22, green=23, blue=24)), pin_factory=pwm)
    try:
        assert leds.no_pwm == set()
        leds.update(Snapshot(state=State.IDLE))
        assert pwm.pin(23).state == pytest.approx(0.15)
    finally:
        leds.close()
        pwm.reset()


def test_a_missing_microphone_shows_the_audio_code_while_idle_only() -> None:
    """Idle with the microphone missing shows the audio_device code (1 flash), not the ready green; a live session
    (the microphone lost mid-call) keeps its own pattern."""
    idle = Snapshot(state=State.IDLE)
    code = pattern_for(idle, mic_missing=True)
    assert code.kind == "code" and code.count == FAILURE_CODES[FailureReason.AUDIO_DEVICE][0] == 1
    assert pattern_for(idle) != code
    live = Snapshot(state=State.LIVE, agent=AgentState.SPEAKING)
    assert pattern_for(live, mic_missing=True) == pattern_for(live)


def test_reconnecting_has_a_pattern_of_its_own(factory: MockFactory) -> None:
    """Reconnecting looks like no other state (whatever the agent last did); per-state LEDs show it on connecting."""
    for agent in AgentState:
        shown = pattern_for(Snapshot(state=State.RECONNECTING, agent=agent))
        assert shown == PATTERNS[(State.RECONNECTING, None)]
    others = [p for key, p in PATTERNS.items() if key != (State.RECONNECTING, None)]
    mine = PATTERNS[(State.RECONNECTING, None)]
    assert all((p.kind, p.on_s, p.off_s, p.color) != (mine.kind, mine.on_s, mine.off_s, mine.color) for p in others)
    per_state = LedConfig(kind="per-state", per_state={"idle": 5, "connecting": 6, "live": 13, "error": 19})
    leds = StatusLeds(config=per_state, pin_factory=factory)
    try:
        leds.update(Snapshot(state=State.RECONNECTING))
        devices = leds.devices
        assert devices[State.CONNECTING].source is not None
        assert devices[State.LIVE].source is None and devices[State.LIVE].value == 0
    finally:
        leds.close()
