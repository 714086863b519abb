"""Status LEDs: an observer that maps each session snapshot to a pattern from one table.

Patterns are gpiozero ``source`` iterators (gpiozero runs them on its own thread, so nothing here blocks the event
loop). A plain ``blink()``/``pulse()`` cannot scale brightness on a single PWM LED nor repeat a blink *code* with a
pause, which failure reasons need to be told apart; one value stream per pattern covers every LED kind alike.

A pin without PWM (gpiozero's native factory, some expanders) gets an on/off LED instead: each pattern's levels are
cut at half their top, so a dim idle is steady on, a pulse becomes a blink, and blink codes stay exact.

An APA102 ring (``leds.kind = "apa102"``, :mod:`kiosk.ledring`) shows the same table: each pattern's ``ring`` style
says whether every LED follows its levels, an arc spins, or the glow follows the agent's voice.

While the microphone is muted (``trigger.mute_pin``) an idle or listening kiosk shows :data:`MUTED` instead.

Failure codes (ERROR state): the LED flashes N short times, pauses, and repeats; an RGB LED also uses a colour per
family (red: broker, magenta: room/agent, yellow: clock, orange: audio, white: the kiosk itself).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kiosk.config import LedConfig
from kiosk.reasons import FailureReason
from kiosk.session import AgentState, Snapshot, State

if TYPE_CHECKING:
    # Only for annotations: kiosk.ledring (and gpiozero with it) is imported when a ring is opened.
    from kiosk.ledring import RingStyle

log = logging.getLogger(__name__)

Color = tuple[float, float, float]
Kind = Literal["off", "solid", "blink", "pulse", "code"]
TICK_S = 0.02

OFF: Color = (0.0, 0.0, 0.0)
WHITE: Color = (1.0, 1.0, 1.0)
GREEN: Color = (0.0, 1.0, 0.0)
BLUE: Color = (0.0, 0.2, 1.0)
CYAN: Color = (0.0, 0.8, 0.8)
AMBER: Color = (1.0, 0.55, 0.0)
RED: Color = (1.0, 0.0, 0.0)
MAGENTA: Color = (1.0, 0.0, 0.8)
YELLOW: Color = (1.0, 0.9, 0.0)
ORANGE: Color = (1.0, 0.3, 0.0)


@dataclasses.dataclass(frozen=True)
class Pattern:
    """How an LED shows one state: a kind, a colour (for RGB), a level and timings."""

    kind: Kind
    color: Color = WHITE
    level: float = 1.0
    on_s: float = 0.5
    off_s: float = 0.5
    count: int = 0
    pause_s: float = 1.0
    ring: RingStyle = "fill"


#: Blink count and RGB colour of every failure reason: the codes installers read off the LED (see README).
FAILURE_CODES: dict[FailureReason, tuple[int, Color]] = {
    FailureReason.AUDIO_DEVICE: (1, ORANGE),
    FailureReason.BROKER_UNREACHABLE: (2, RED),
    FailureReason.BROKER_TIMEOUT: (3, RED),
    FailureReason.BROKER_UNAUTHORIZED: (4, RED),
    FailureReason.BROKER_REJECTED: (5, RED),
    FailureReason.BROKER_ERROR: (6, RED),
    FailureReason.BROKER_MALFORMED: (7, RED),
    FailureReason.CLOCK: (8, YELLOW),
    FailureReason.CONNECT_FAILED: (9, MAGENTA),
    FailureReason.CONNECT_TIMEOUT: (10, MAGENTA),
    FailureReason.AGENT_NO_SHOW: (11, MAGENTA),
    FailureReason.SECRET_UNREADABLE: (12, WHITE),
    FailureReason.INTERNAL: (13, WHITE),
    FailureReason.FIRST_WORDS_TIMEOUT: (14, MAGENTA),
    FailureReason.UPLINK_TIMEOUT: (15, MAGENTA),
    FailureReason.NETWORK_LOST: (16, MAGENTA),
    FailureReason.DUPLICATE_IDENTITY: (17, MAGENTA),
    FailureReason.ROOM_CLOSED: (18, MAGENTA),
    FailureReason.STATE_DIR: (19, WHITE),
    FailureReason.BROKER_UNRESOLVABLE: (20, RED),
}

#: What each state (and, while live, each agent state) looks like.
PATTERNS: dict[tuple[State, AgentState | None], Pattern] = {
    (State.IDLE, None): Pattern("solid", GREEN, level=0.15),
    (State.CONNECTING, None): Pattern("blink", BLUE, on_s=0.15, off_s=0.15, ring="spin"),
    (State.LIVE, AgentState.ABSENT): Pattern("pulse", BLUE, on_s=0.4, off_s=0.4),
    (State.LIVE, AgentState.INITIALIZING): Pattern("pulse", BLUE, on_s=0.4, off_s=0.4),
    (State.LIVE, AgentState.IDLE): Pattern("solid", GREEN),
    (State.LIVE, AgentState.LISTENING): Pattern("solid", GREEN),
    (State.LIVE, AgentState.THINKING): Pattern("pulse", AMBER, on_s=0.6, off_s=0.6),
    (State.LIVE, AgentState.SPEAKING): Pattern("blink", CYAN, level=1.0, on_s=0.25, off_s=0.1, ring="level"),
    # The network dropped mid-session: a slower amber blink than connecting's, spinning like it on a ring.
    (State.RECONNECTING, None): Pattern("blink", AMBER, on_s=0.15, off_s=0.6, ring="spin"),
    (State.ENDING, None): Pattern("blink", WHITE, level=0.5, on_s=0.5, off_s=0.5),
}
#: States without an LED of their own in the one-LED-per-state layout, and the LED that shows them.
_PER_STATE_LED = {State.ENDING: State.LIVE, State.RECONNECTING: State.CONNECTING}


#: The microphone is muted: a short red flash every two seconds, shown instead of idle and of listening.
MUTED = Pattern("blink", RED, level=0.6, on_s=0.1, off_s=1.9)
#: What the mute replaces: states in which the kiosk would be hearing the visitor.
MUTE_SHOWN_IN: frozenset[tuple[State, AgentState | None]] = frozenset(
    {(State.IDLE, None)} | {(State.LIVE, a) for a in (AgentState.IDLE, AgentState.LISTENING)}
)


def pattern_for(snap: Snapshot, *, muted: bool = False, mic_missing: bool = False) -> Pattern:
    """Look up the pattern for a snapshot (the single table the LEDs follow); ``muted``: the mic is muted;
    ``mic_missing``: the microphone is missing, shown while idle as the audio_device code (no press would work)."""
    if mic_missing and snap.state == State.IDLE:
        snap = dataclasses.replace(snap, state=State.ERROR, failure=FailureReason.AUDIO_DEVICE)
    if muted and (snap.state, snap.agent if snap.state == State.LIVE else None) in MUTE_SHOWN_IN:
        return MUTED
    if snap.state == State.ERROR:
        count, color = FAILURE_CODES.get(snap.failure or FailureReason.INTERNAL, (13, WHITE))
        return Pattern("code", color, on_s=0.12, off_s=0.18, count=count, pause_s=1.0)
    agent = snap.agent if snap.state == State.LIVE else None
    return PATTERNS[(snap.state, agent)]


def on_off(stream: Iterator[float], pattern: Pattern, brightness: float) -> Iterator[float]:
    """``stream`` cut to 1.0 or 0.0 at half the pattern's top level, for an LED that cannot dim."""
    half = max(1e-6, pattern.level * brightness / 2)
    return (1.0 if value >= half else 0.0 for value in stream)


def levels(pattern: Pattern, brightness: float) -> Iterator[float]:
    """The brightness (0..1) of the pattern at every tick, forever (off and solid yield one value)."""
    top = max(0.0, min(1.0, pattern.level * brightness))

    def ticks(seconds: float) -> int:
        return max(1, round(seconds / TICK_S))

    if pattern.kind == "off":
        return iter([0.0])
    if pattern.kind == "solid":
        return iter([top])
    if pattern.kind == "blink":
        return itertools.cycle([top] * ticks(pattern.on_s) + [0.0] * ticks(pattern.off_s))
    if pattern.kind == "pulse":
        rise, fall = ticks(pattern.on_s), ticks(pattern.off_s)
        wave = [top * (1 - math.cos(math.pi * i / rise)) / 2 for i in range(rise)]
        wave += [top * (1 + math.cos(math.pi * i / fall)) / 2 for i in range(fall)]
        return itertools.cycle(wave)
    flash = [top] * ticks(pattern.on_s) + [0.0] * ticks(pattern.off_s)
    return itertools.cycle(flash * pattern.count + [0.0] * ticks(pattern.pause_s))


class LedDevice(Protocol):
    """What the observer needs of a gpiozero output device (PWMLED or RGBLED)."""

    source_delay: float
    source: Any
    value: Any

    def close(self) -> None:
        """Release the pins."""


class StatusLeds:
    """Observer: shows every snapshot on the configured LEDs; never changes state itself."""

    def __init__(self, *, config: LedConfig, pin_factory: Any = None, level: Callable[[], float] | None = None) -> None:
        """Open the LEDs of ``config``; ``level()`` (0..1, any thread) is the agent's loudness for a ring's glow."""
        self._config = config
        self._level = level or (lambda: 0.0)
        self._current: tuple[Pattern, State] | None = None
        self._last: Snapshot | None = None
        #: Whether the microphone is muted (shown as :data:`MUTED`); set it with :meth:`set_muted`.
        self.muted = False
        #: Whether the microphone is muted at the device itself (shown as :data:`MUTED` too).
        self.device_muted = False
        #: Whether the microphone is missing (idle shows the audio_device code); set it with :meth:`set_mic_missing`.
        self.mic_missing = False
        #: Keys of the devices that could not dim (no PWM on their pins): they blink on/off instead.
        self.no_pwm: set[State | None] = set()
        self._devices: dict[State | None, LedDevice] = _open(config, pin_factory, self.no_pwm)

    @property
    def devices(self) -> dict[State | None, LedDevice]:
        """The open gpiozero devices by the state they show (None: the single or RGB LED)."""
        return dict(self._devices)

    def update(self, snap: Snapshot) -> None:
        """Show ``snap``; a pattern already showing keeps running undisturbed."""
        self._last = snap
        pattern = pattern_for(snap, muted=self.muted or self.device_muted, mic_missing=self.mic_missing)
        if self._current == (pattern, snap.state):
            return
        self._current = (pattern, snap.state)
        # One LED per state has none for ENDING (the live LED shows it) nor for RECONNECTING (the connecting one).
        target = _PER_STATE_LED.get(snap.state, snap.state)
        for key, device in self._devices.items():
            pwm = key not in self.no_pwm
            if key is None or key == target:
                self._show(device, pattern, rgb=len(self._devices) == 1 and self._config.kind == "rgb", pwm=pwm)
            else:
                self._show(device, Pattern("off"), rgb=False, pwm=pwm)

    def set_muted(self, muted: bool) -> None:
        """Show (or stop showing) that the microphone is muted."""
        self.muted = muted
        if self._last is not None:
            self.update(self._last)

    def set_device_muted(self, muted: bool) -> None:
        """Show (or stop showing) that the microphone is muted at the device (its own mute button)."""
        self.device_muted = muted
        if self._last is not None:
            self.update(self._last)

    def set_mic_missing(self, missing: bool) -> None:
        """Show (or stop showing) that the microphone is missing."""
        self.mic_missing = missing
        if self._last is not None:
            self.update(self._last)

    def _show(self, device: LedDevice, pattern: Pattern, *, rgb: bool, pwm: bool) -> None:
        stream = levels(pattern, self._config.brightness)
        if self._config.kind == "apa102":
            self._show_ring(device, pattern, stream)
            return
        if not pwm:
            stream = on_off(stream, pattern, self._config.brightness)
        if rgb:
            color = pattern.color if pwm else tuple(float(c >= 0.5) for c in pattern.color)
            values: Iterator[Any] = (tuple(c * level for c in color) for level in stream)
        else:
            values = stream
        device.source = None
        device.source_delay = TICK_S
        if pattern.kind in {"off", "solid"}:
            device.value = next(values)
        else:
            device.source = values

    def _show_ring(self, device: LedDevice, pattern: Pattern, stream: Iterator[float]) -> None:
        from kiosk.ledring import animation

        count = self._config.ring.count if self._config.ring is not None else 1
        top = max(0.0, min(1.0, pattern.level * self._config.brightness))
        turn = max(1, round(2 * (pattern.on_s + pattern.off_s) / TICK_S))
        frames = animation(pattern.ring, pattern.color, count, top, levels=stream, turn=turn, level=self._level)
        device.source = None
        device.source_delay = TICK_S
        if pattern.kind in {"off", "solid"} and pattern.ring == "fill":
            device.value = next(frames)
        else:
            device.source = frames

    def close(self) -> None:
        """Turn everything off and release the pins."""
        for device in self._devices.values():
            device.source = None
            device.close()
        self._devices = {}


def _open(config: LedConfig, pin_factory: Any, no_pwm: set[State | None]) -> dict[State | None, LedDevice]:
    """Open the configured LEDs with PWM, or on/off where the pin has none (its key is added to ``no_pwm``)."""
    if config.kind == "none":
        return {}
    if config.kind == "apa102":
        from kiosk.ledring import open_ring

        assert config.ring is not None
        return {None: open_ring(config.ring, pin_factory)}
    from gpiozero import LED, PWMLED, RGBLED
    from gpiozero.exc import PinPWMUnsupported

    common = {"active_high": config.active_high, "pin_factory": pin_factory}

    def one(key: State | None, pin: int) -> LedDevice:
        try:
            return PWMLED(pin, **common)  # type: ignore[no-any-return]
        except PinPWMUnsupported:
            log.info("GPIO%d has no PWM with this pin driver: its LED blinks on/off instead of dimming", pin)
            no_pwm.add(key)
            return LED(pin, **common)  # type: ignore[no-any-return]

    if config.kind == "single":
        assert config.pin is not None
        return {None: one(None, config.pin)}
    if config.kind == "rgb":
        assert config.rgb is not None
        pins = (config.rgb.red, config.rgb.green, config.rgb.blue)
        # Probe each pin on its own: RGBLED does not release the pins it opened when a later one fails.
        probes: list[LedDevice] = []
        try:
            probes.extend(PWMLED(pin, **common) for pin in pins)
        except PinPWMUnsupported:
            log.info("GPIO%d/%d/%d have no PWM with this pin driver: the RGB LED shows full colours only", *pins)
            no_pwm.add(None)
        finally:
            for probe in probes:
                probe.close()
        return {None: RGBLED(*pins, pwm=None not in no_pwm, **common)}
    assert config.per_state is not None
    by_state = {
        State.IDLE: config.per_state.idle,
        State.CONNECTING: config.per_state.connecting,
        State.LIVE: config.per_state.live,
        State.ERROR: config.per_state.error,
    }
    return {state: one(state, pin) for state, pin in by_state.items() if pin is not None}
