"""An APA102 (DotStar) LED ring on gpiozero's SPI, and the ring's animation of each pattern of :mod:`kiosk.leds`.

:class:`Apa102` is a gpiozero ``SPIDevice`` with a ``source``: gpiozero's SPI interface carries the bytes (hardware
SPI through ``/dev/spidev*`` with the lgpio factory, gpiozero's software SPI on other pins or on mock pins) and
gpiozero's source thread paces the animation, so nothing here runs on the event loop.

The frames follow the APA102 datasheet: a start frame of 32 zero bits; per LED ``0b111`` + 5 bits of global
brightness, then the three colour bytes in the ring's order (most rings: blue, green, red); an end frame of at least
``count / 2`` more clock edges (zero bytes).

The ring shows the same table as the other LED kinds (:data:`kiosk.leds.PATTERNS`): each pattern's ``ring`` style
says how: ``"fill"`` (every LED follows the pattern's levels: steady, breathing, blink codes), ``"spin"`` (an arc
chasing round, one turn per two blink periods, ``2 * (on_s + off_s)``) or ``"level"`` (a glow that follows the
agent's voice).
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from gpiozero import SourceMixin, SPIDevice
from gpiozero.exc import SPISoftwareFallback

from kiosk.config import ColorOrder, RingConfig

log = logging.getLogger(__name__)

Color = tuple[float, float, float]
Frame = tuple[Color, ...]
#: How the ring shows a pattern (:attr:`kiosk.leds.Pattern.ring`): every LED alike, a spinning arc, or following
#: the voice.
RingStyle = Literal["fill", "spin", "level"]

#: The first byte of every LED frame: three 1 bits, then the 5-bit global brightness (full here; patterns dim).
_LED_HEADER = 0xE0 | 31
#: The quietest glow of the "level" style, so a speaking agent is never shown as dark (fraction of the top level).
LEVEL_FLOOR = 0.25
#: How much of the previous level is kept each tick while the voice falls (the glow decays, it does not flicker).
LEVEL_DECAY = 0.85


def encode(pixels: Sequence[Color], order: ColorOrder = "bgr") -> list[int]:
    """The SPI bytes that show ``pixels`` (r, g, b from 0 to 1 each) on an APA102 chain in colour ``order``."""
    data = [0, 0, 0, 0]
    index = {"r": 0, "g": 1, "b": 2}
    for pixel in pixels:
        data.append(_LED_HEADER)
        data.extend(round(max(0.0, min(1.0, pixel[index[c]])) * 255) for c in order)
    data.extend([0] * max(4, math.ceil(len(pixels) / 16)))
    return data


class Apa102(SourceMixin, SPIDevice):  # type: ignore[misc]
    """An APA102 chain of ``count`` LEDs; ``value`` is a tuple of ``count`` (r, g, b) colours (0..1).

    Keyword arguments: ``count``, ``order`` (colour byte order), ``pin_factory``, and gpiozero's SPI arguments
    (``port`` and ``device``, or ``clock_pin``, ``mosi_pin``, ``miso_pin`` and ``select_pin``).
    Raises gpiozero's ``GPIOZeroError`` subclasses when the SPI interface or its pins cannot be had.
    """

    def __init__(self, *, count: int, order: ColorOrder = "bgr", **spi_args: Any) -> None:
        self._count = count
        self._order: ColorOrder = order
        self._value: Frame = ((0.0, 0.0, 0.0),) * count
        self._sent: list[int] | None = None
        super().__init__(**spi_args)
        self.value = self._value

    @property
    def count(self) -> int:
        """Number of LEDs."""
        return self._count

    @property
    def value(self) -> Frame:
        """The colour of each LED."""
        return self._value

    @value.setter
    def value(self, pixels: Sequence[Color]) -> None:
        if len(pixels) != self._count:
            raise ValueError(f"the ring has {self._count} LEDs, got {len(pixels)} colours")
        self._value = tuple(pixels)
        data = encode(self._value, self._order)
        if data != self._sent:  # an unchanged frame (a steady pattern) costs no SPI traffic
            self._spi.transfer(data)
            self._sent = data

    def close(self) -> None:
        """Stop any animation, turn every LED off and release the SPI interface (idempotent)."""
        self.source = None
        if getattr(self, "_spi", None) is not None:
            self.value = ((0.0, 0.0, 0.0),) * self._count
        super().close()


def spin(color: Color, count: int, top: float, ticks_per_turn: int) -> Iterator[Frame]:
    """An arc of a quarter of the ring (its head brightest) chasing round once every ``ticks_per_turn`` frames."""
    arc = max(1, count // 4)
    frames: list[Frame] = []
    for tick in range(ticks_per_turn):
        head = tick * count / ticks_per_turn
        frame = []
        for i in range(count):
            behind = (head - i) % count
            level = top * (1 - behind / arc) if behind < arc else 0.0
            frame.append((color[0] * level, color[1] * level, color[2] * level))
        frames.append(tuple(frame))
    return itertools.cycle(frames)


def follow_level(color: Color, count: int, top: float, level: Callable[[], float]) -> Iterator[Frame]:
    """Every LED glows with ``level()`` (0..1, read each frame): fast rise, slow decay, never below the floor."""
    held = 0.0
    while True:
        held = max(max(0.0, min(1.0, level())), held * LEVEL_DECAY)
        value = top * (LEVEL_FLOOR + (1 - LEVEL_FLOOR) * held)
        yield ((color[0] * value, color[1] * value, color[2] * value),) * count


def fill(color: Color, count: int, levels: Iterator[float]) -> Iterator[Frame]:
    """Every LED in ``color`` at each level of ``levels``."""
    for value in levels:
        yield ((color[0] * value, color[1] * value, color[2] * value),) * count


def animation(
    style: RingStyle,
    color: Color,
    count: int,
    top: float,
    *,
    levels: Iterator[float],
    turn: int,
    level: Callable[[], float],
) -> Iterator[Frame]:
    """The frames of one pattern on a ring of ``count`` LEDs at most ``top`` bright (0..1).

    ``levels``: the pattern's brightness per tick (``"fill"``); ``turn``: ticks per turn (``"spin"``); ``level()``:
    the agent's loudness (``"level"``).
    """
    if style == "spin":
        return spin(color, count, top, turn)
    if style == "level":
        return follow_level(color, count, top, level)
    return fill(color, count, levels)


def open_ring(ring: RingConfig, pin_factory: Any) -> Apa102:
    """Open the ring on its SPI port, or on its pins through gpiozero's software SPI.

    Raises gpiozero's ``GPIOZeroError`` subclasses when the SPI interface or its pins cannot be had; a port without
    hardware SPI (SPI not enabled) works through gpiozero's software SPI, with a warning that says how to enable it.
    """
    spi: dict[str, Any]
    if ring.clock_pin is not None:
        spi = {"clock_pin": ring.clock_pin, "mosi_pin": ring.data_pin, "miso_pin": None, "select_pin": ring.select_pin}
    else:
        spi = {"port": ring.spi_port, "device": ring.spi_device}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SPISoftwareFallback)
        device = Apa102(count=ring.count, order=ring.order, pin_factory=pin_factory, **spi)
    for warning in caught:
        if not issubclass(warning.category, SPISoftwareFallback) or "port" not in spi:
            warnings.warn(warning.message, warning.category, stacklevel=2)
        else:
            log.warning(
                "LED ring: no hardware SPI (%s), so gpiozero drives SPI%d's pins in software, slowly: enable SPI "
                "with dtparam=spi=on in /boot/firmware/config.txt and reboot",
                warning.message,
                ring.spi_port,
            )
    log.info("LED ring: %d APA102 LEDs on %s", ring.count, ", ".join(f"{k} {v}" for k, v in spi.items()))
    return device
