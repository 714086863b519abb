"""The APA102 ring through gpiozero's mock SPI: the bytes each state sends, decoded from the mock's data pin."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.audio import AGENT, AudioEngine
from kiosk.config import AudioConfig, KioskConfig, LedConfig, RingConfig
from kiosk.ledring import Apa102, encode
from kiosk.leds import BLUE, CYAN, GREEN, MUTED, RED, StatusLeds
from kiosk.reasons import FailureReason
from kiosk.session import AgentState, Snapshot, State
from tests.fixtures.ring import RingProbe, pixels


def ring_leds(factory: MockFactory, count: int = 6, level: float = 0.0, **led: object) -> tuple[StatusLeds, RingProbe]:
    """Status LEDs on a ring at SPI port 0, device 0 (clock GPIO11, data GPIO10, select GPIO8), and its probe."""
    probe = RingProbe(clock=11, data=10, select=8, factory=factory)
    config = LedConfig(kind="apa102", ring=RingConfig(count=count), **led)  # type: ignore[arg-type]
    return StatusLeds(config=config, pin_factory=factory, level=lambda: level), probe


def test_encode_follows_the_datasheet() -> None:
    """Start frame of zeros, 0xE0|brightness then the colour bytes in the ring's order, an end frame of zeros."""
    assert encode([(1.0, 0.5, 0.0)], "bgr") == [0, 0, 0, 0, 0xFF, 0, 128, 255, 0, 0, 0, 0]
    assert encode([(1.0, 0.5, 0.0)], "rgb")[4:8] == [0xFF, 255, 128, 0]
    assert len(encode([(0.0, 0.0, 0.0)] * 40)) == 4 + 160 + 4
    assert len(encode([(0.0, 0.0, 0.0)] * 100)) == 4 + 400 + 7


def test_idle_is_a_dim_green_ring_and_stop_turns_it_off(mock_pins: MockFactory) -> None:
    """Idle sends one frame of dim green on every LED (no animation thread); close sends all off."""
    leds, probe = ring_leds(mock_pins, count=6, brightness=0.5)
    leds.update(Snapshot(state=State.IDLE))
    frames = probe.wait_frames(2)
    green = round(GREEN[1] * 0.15 * 0.5 * 255)
    assert pixels(frames[-1], 6) == [(0, green, 0)] * 6
    leds.update(Snapshot(state=State.IDLE))
    leds.close()
    frames = probe.wait_frames(3)
    assert len(frames) == 3, "an unchanged pattern must not be sent again"
    assert pixels(frames[-1], 6) == [(0, 0, 0)] * 6


def test_connecting_spins_an_arc_round_the_ring(mock_pins: MockFactory) -> None:
    """While connecting a blue arc a quarter of the ring long moves round: its head visits every LED in turn."""
    leds, probe = ring_leds(mock_pins, count=8)
    try:
        leds.update(Snapshot(state=State.CONNECTING))
        frames = probe.wait_frames(30)
    finally:
        leds.close()
    heads = []
    for frame in frames[1:-1]:
        ring = pixels(frame, 8)
        lit = [i for i, p in enumerate(ring) if p != (0, 0, 0)]
        assert 1 <= len(lit) <= 2, ring
        assert all(p[0] == 0 and p[2] >= p[1] for p in ring), "the arc is blue"
        heads.append(max(range(8), key=lambda i: ring[i][2]))
    assert len(set(heads)) >= 4, heads
    steps = {(b - a) % 8 for a, b in itertools.pairwise(heads)}
    assert steps <= {0, 1}, f"the arc moves one LED at a time, forwards: {heads}"
    assert round(BLUE[2] * 255) in {p[2] for f in frames[1:-1] for p in pixels(f, 8)}


def test_speaking_glows_with_the_agents_level(mock_pins: MockFactory) -> None:
    """While the agent speaks every LED glows cyan, brighter for a louder agent, never dark."""
    seen: dict[float, int] = {}
    for level in (0.0, 1.0):
        leds, probe = ring_leds(mock_pins, count=4, level=level)
        try:
            leds.update(Snapshot(state=State.LIVE, agent=AgentState.SPEAKING))
            frame = probe.wait_frames(2)[-1]
        finally:
            leds.close()
            probe.close()
        ring = pixels(frame, 4)
        assert len(set(ring)) == 1 and ring[0][0] == 0
        seen[level] = ring[0][1]
    assert seen[1.0] == round(CYAN[1] * 255)
    assert 0 < seen[0.0] < seen[1.0] / 2


def test_a_failure_flashes_its_code_in_its_family_colour(mock_pins: MockFactory) -> None:
    """broker_unreachable (code 2, red): every LED red or off, with both seen."""
    leds, probe = ring_leds(mock_pins, count=3)
    try:
        leds.update(Snapshot(state=State.ERROR, failure=FailureReason.BROKER_UNREACHABLE))
        frames = probe.wait_frames(4)
    finally:
        leds.close()
    colours = {pixels(f, 3)[0] for f in frames[1:-1]}
    assert colours == {(255, 0, 0), (0, 0, 0)}
    assert all(len(set(pixels(f, 3))) == 1 for f in frames)


def test_mute_shows_red_flashes_while_idle(mock_pins: MockFactory) -> None:
    """A muted kiosk shows the MUTED pattern (red) instead of idle green; unmuting brings green back."""
    leds, probe = ring_leds(mock_pins, count=3)
    try:
        leds.update(Snapshot(state=State.IDLE))
        leds.set_muted(True)
        frames = probe.wait_frames(3)
        assert MUTED.color == RED
        assert any(pixels(f, 3)[0] == (round(0.6 * 255), 0, 0) for f in frames)
        count = len(probe.frames)
        leds.set_muted(False)
        frames = probe.wait_frames(count + 1)
    finally:
        leds.close()
    assert any(pixels(f, 3)[0][1] > 0 and pixels(f, 3)[0][0] == 0 for f in frames[count - 1 :])


def test_ring_on_any_pins_through_software_spi(mock_pins: MockFactory) -> None:
    """clock_pin/data_pin/select_pin drive the ring through gpiozero's software SPI, in the configured order."""
    probe = RingProbe(clock=5, data=6, select=13, factory=mock_pins)
    ring = Apa102(count=2, order="rgb", clock_pin=5, mosi_pin=6, miso_pin=None, select_pin=13, pin_factory=mock_pins)
    ring.value = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="2 LEDs"):
        ring.value = ((0.0, 0.0, 0.0),)
    ring.close()
    ring.close()
    frames = probe.wait_frames(3)
    assert len(frames) == 3
    assert frames[1][4:12] == [0xFF, 255, 0, 0, 0xFF, 0, 0, 255]
    assert frames[-1][4:12] == [0xFF, 0, 0, 0, 0xFF, 0, 0, 0]


def test_ring_config_and_its_pins() -> None:
    """A ring needs [leds.ring]; its SPI pins join the conflict check; half a set of pins is refused."""
    with pytest.raises(ValueError, match=r"leds\.ring"):
        LedConfig(kind="apa102")
    with pytest.raises(ValueError, match="clock_pin, data_pin and select_pin"):
        RingConfig(clock_pin=5, data_pin=6)
    ring = RingConfig(count=3, spi_port=0, spi_device=1)
    assert set(ring.pins().values()) == {11, 10, 9, 7}
    broker = {"dialect": "livekit", "url": "https://b.example"}
    with pytest.raises(ValueError, match="GPIO7 is used by"):
        KioskConfig.model_validate(
            {"broker": broker, "leds": {"kind": "apa102", "ring": {"spi_device": 1}}, "trigger": {"button_pin": 7}}
        )
    ok = KioskConfig.model_validate(
        {
            "broker": broker,
            "leds": {"kind": "apa102", "ring": {"count": 3, "spi_device": 1}},
            "trigger": {"button_pin": 17},
        }
    )
    assert ok.pins()["trigger.button_pin"] == 17


def test_the_agents_level_comes_from_the_mixer() -> None:
    """The ring's glow reads the loudness of the agent's audio the mixer last played: RMS x 4, 0 when silent."""
    engine = AudioEngine(audio=AudioConfig())
    assert engine.agent_level() == 0.0
    t = np.arange(4800) / 48_000
    engine.mixer_input(AGENT).push((np.sin(2 * np.pi * 440 * t) * 0.1 * 32767).astype(np.int16))
    engine.mixer.mix()
    assert engine.agent_level() == pytest.approx(4 * 0.1 / np.sqrt(2), rel=0.02)
    for _ in range(10):
        engine.mixer.mix()
    assert engine.agent_level() == 0.0
