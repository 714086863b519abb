"""``run()``: the daemon from top to bottom.

Validate the config before touching hardware, open the components, install signal handlers, ``READY=1``, wait for
shutdown, ``STOPPING=1``, end any live session at the broker, tear down in reverse, return an exit code.
Exit codes: 0 clean stop, 78 bad config (systemd does not restart), 69 a device could not be opened, 75 a hold asked
for a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from kiosk import session as sm
from kiosk.audio import AudioEngine, StreamFactory, VadEvent, VadEventKind
from kiosk.audio.deafness import DeafnessWatch, PulseProbe
from kiosk.broker import ServerClock, SessionKeeper, SessionLedger, make_broker, make_client
from kiosk.broker.dns import DaemonThreadExecutor
from kiosk.config import KioskConfig, LedConfig
from kiosk.configfile import EX_CONFIG, load_config
from kiosk.daemon.control_socket import ControlServer, EventBus
from kiosk.daemon.controller import DaemonController
from kiosk.daemon.logsetup import setup_logging
from kiosk.daemon.metrics_export import open_metrics
from kiosk.daemon.notify import Notifier
from kiosk.daemon.observers import Observers
from kiosk.daemon.policy import EX_TEMPFAIL, Policy, microphone_missing
from kiosk.daemon.reload import Reloader
from kiosk.daemon.session_driver import RunRequest, SessionDriver
from kiosk.daemon.sessionrun import SessionRun, SessionSummary
from kiosk.daemon.volume_mute import DeviceControls
from kiosk.errors import ConfigError, SecretError
from kiosk.leds import StatusLeds
from kiosk.secret import SecretSource
from kiosk.trigger import ButtonTrigger
from kiosk.wakeguard import WakeGate

log = logging.getLogger(__name__)
T = TypeVar("T")

EX_UNAVAILABLE = 69
__all__ = ["EX_TEMPFAIL", "EX_UNAVAILABLE", "run"]
#: How long shutdown waits for a session to close: its broker end and leaving the room (2 s each, sessionrun).
SHUTDOWN_BUDGET_S = 12.0
#: Everything a stop may take before the last teardown steps (audio, LEDs: about a second): systemd's
#: TimeoutStopSec=15 (systemd/kiosk.service) less 2 s. Broker starts still under way get what is left of it, so
#: that a session they open is ended before the daemon exits.
STOP_BUDGET_S = 13.0
#: The states in which the visitor's turns are timed (kiosk.audio.turns).
TURN_STATES = frozenset({sm.State.LIVE, sm.State.RECONNECTING})


async def run(
    config_path: Path,
    *,
    pin_factory: Any = None,
    stream_factory: StreamFactory | None = None,
    max_sessions: int | None = None,
    on_summary: Callable[[SessionSummary], None] | None = None,
    configure_logging: bool = True,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the kiosk until SIGTERM/SIGINT, ``max_sessions`` sessions or ``stop`` is set; return the exit code."""
    # 1. Config, before any hardware.
    loaded = _load(config_path, configure_logging=configure_logging)
    if isinstance(loaded, int):
        return loaded
    config, secret = loaded
    loop = asyncio.get_running_loop()
    # DNS lookups (httpx's) and other blocking calls run here; a hung one never holds up the daemon's exit.
    loop.set_default_executor(DaemonThreadExecutor())
    notifier = Notifier()
    parts = _Parts(pin_factory=pin_factory, stream_factory=stream_factory, on_summary=on_summary)
    async with contextlib.AsyncExitStack() as stack:
        # 2. Components, each closed in reverse order on the way out (an early return included).
        try:
            daemon = await _open(stack, config, secret, notifier, parts, max_sessions=max_sessions)
        except ConfigError as exc:
            log.error("config error: %s", exc)
            return EX_CONFIG
        except _ControlSocketUnavailable as exc:
            log.error("control socket: %s", exc.__cause__)
            return EX_UNAVAILABLE
        driver = daemon.driver

        # 3. Signals, then ready.
        reloader = Reloader(config_path=config_path, driver=driver, notifier=notifier, on_reload=daemon.reloaded)
        stack.callback(_remove_signals, loop, _install_signals(loop, driver, reloader))
        background = {
            "recover": daemon.keeper.recover(),
            "clock": _check_clock(daemon.client, config.broker.url, daemon.server_clock),
            "watchdog": notifier.watchdog(),
        }
        if stop is not None:
            background["stop"] = _stop_when(stop, driver)
        for name, coro in background.items():
            stack.callback(loop.create_task(coro, name=name).cancel)
        daemon.observers.start()
        notifier.ready(Observers.status_line(driver.snapshot))
        log.info("kiosk ready (%s broker, identity %s)", config.broker.dialect, config.device.identity)

        # 4. Wait for shutdown; the driver exits once no session is open.
        await driver.exited.wait()
        notifier.stopping()
        log.info("stopping")
        stop_by = loop.time() + STOP_BUDGET_S

        # 5. The session's end, broker starts still under way; then every part in reverse.
        await driver.wait_idle(SHUTDOWN_BUDGET_S)
        await daemon.keeper.aclose(wait_starts_s=max(0.0, stop_by - loop.time()))
    return daemon.policy.exit_code


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What a caller of :func:`run` may put in place of the real thing (tests, benchmarks)."""

    pin_factory: Any
    stream_factory: StreamFactory | None
    on_summary: Callable[[SessionSummary], None] | None


@dataclasses.dataclass(frozen=True)
class _Daemon:
    """The opened daemon: what :func:`run` still needs once every part is open."""

    driver: SessionDriver
    keeper: SessionKeeper
    policy: Policy
    observers: Observers
    client: httpx.AsyncClient
    server_clock: ServerClock
    reloaded: Callable[[KioskConfig], None]


class _ControlSocketUnavailable(Exception):
    """The control socket could not be opened (its ``OSError`` is the cause): exit 69."""


def _load(config_path: Path, *, configure_logging: bool) -> tuple[KioskConfig, SecretSource | None] | int:
    """The config and the broker secret, with logging set up; or ``EX_CONFIG`` after logging why not."""
    try:
        config = load_config(config_path)
        secret = SecretSource.from_broker(config.broker)
        if secret is not None:
            secret.get()
    except (ConfigError, SecretError) as exc:
        if configure_logging:
            setup_logging("info")
        log.error("config error: %s", exc)
        return EX_CONFIG
    if configure_logging:
        known = [secret.get().get_secret_value()] if secret is not None else []
        setup_logging(config.daemon.log_level, secrets=known)
    return config, secret


async def _open(
    stack: contextlib.AsyncExitStack,
    config: KioskConfig,
    secret: SecretSource | None,
    notifier: Notifier,
    parts: _Parts,
    *,
    max_sessions: int | None,
) -> _Daemon:
    """Open every part of the daemon, registering each one's close on ``stack``.

    Raises ConfigError (a broker setting that cannot work) and _ControlSocketUnavailable.
    """
    loop = asyncio.get_running_loop()
    server_clock = ServerClock()
    client = make_client(config.broker, server_clock=server_clock)
    stack.push_async_callback(client.aclose)
    broker = make_broker(config, client=client, secret=secret)
    keeper = SessionKeeper(
        broker=broker,
        ledger=SessionLedger(config.daemon.state_dir),
        end_timeout_s=config.broker.timeout_s,
        end_retry_max_s=config.broker.end_retry_max_s,
    )
    stack.push_async_callback(keeper.aclose)
    audio = AudioEngine(audio=config.audio, trigger=config.trigger, stream_factory=parts.stream_factory)
    stack.push_async_callback(audio.close)
    # A device missing now (a USB microphone not yet enumerated) is opened when it appears: the daemon becomes
    # ready and shows the fault rather than exiting into systemd's restart limit.
    await audio.start(missing_ok=True)
    audio.idle_processing = config.trigger.voice_wake
    await _warm_up()
    events = EventBus()
    wake_gate = WakeGate(config=config.trigger)
    make_run = functools.partial(_session_run, keeper, audio, server_clock)
    driver = SessionDriver(config=config, make_run=make_run, wake_gate=wake_gate)
    pins = parts.pin_factory
    leds = _gpio_part("status LEDs", lambda: StatusLeds(config=config.leds, pin_factory=pins, level=audio.agent_level))
    leds = leds or StatusLeds(config=LedConfig(), pin_factory=pins)
    stack.callback(leds.close)
    observers = Observers(driver=driver, notifier=notifier, audio=audio, leds=leds, events=events)
    controls = DeviceControls(config=config, audio=audio, on_change=observers.controls_changed, on_mute=leds.set_muted)
    stack.push_async_callback(controls.aclose)
    controls.open_buttons(config, loop=loop, pin_factory=pins, opener=_gpio_part)
    metrics, exporter = open_metrics(
        config=config.metrics, driver=driver, keeper=keeper, audio=audio, wake_gate=wake_gate
    )

    def summarised(summary: SessionSummary) -> None:
        metrics.session_done(summary)
        if parts.on_summary is not None:
            parts.on_summary(summary)

    missing = functools.partial(microphone_missing, audio)
    policy = Policy(driver=driver, max_sessions=max_sessions, on_summary=summarised, audio_missing=missing)
    driver.on_summary = policy.session_done
    if config.trigger.button_pin is not None:
        make = functools.partial(
            ButtonTrigger, config=config.trigger, loop=loop, on_event=policy.button, pin_factory=pins
        )
        trigger = _gpio_part("button", make)
        if trigger is not None:
            stack.callback(trigger.close)

    def on_vad(event: VadEvent) -> None:
        if event.kind == VadEventKind.WAKE and driver.config.trigger.voice_wake:
            driver.wake(event.speech_start, level_dbfs=event.level_dbfs)

    audio.subscribe_vad(on_vad)
    audio.subscribe_health(observers.audio_health)
    audio.subscribe_health(policy.audio_health)
    deafness = DeafnessWatch(
        engine=audio,
        probe=PulseProbe(),
        digital_silence_s=config.audio.digital_silence_s,
        on_device_mute=observers.device_muted,
    )
    driver.observe(lambda _, new: deafness.arm() if new.state == sm.State.LIVE else deafness.disarm())
    # Turns are timed while the session is live (a reconnect keeps them): the greeting after a press is not a turn.
    driver.observe(lambda _, new: audio.turns.arm() if new.state in TURN_STATES else audio.turns.disarm())
    # Learn where the microphone stream is before anyone can press (a stream moved later is then told apart).
    await deafness.check()
    deafness.start(loop)
    stack.push_async_callback(deafness.stop)
    # The metrics listener first: once the control socket answers, `kiosk status` names it.
    await exporter.start()
    stack.push_async_callback(exporter.close)
    controller = DaemonController(driver=driver, audio=audio, press=policy.press, controls=controls, metrics=exporter)
    control = ControlServer(
        path=config.control.socket, mode=config.control.socket_mode, controller=controller, events=events
    )
    try:
        await control.start()
    except OSError as exc:
        raise _ControlSocketUnavailable from exc
    stack.push_async_callback(control.close)

    def reloaded(new: KioskConfig) -> None:
        audio.idle_processing = new.trigger.voice_wake
        wake_gate.config = new.trigger

    return _Daemon(driver, keeper, policy, observers, client, server_clock, reloaded)


def _session_run(
    keeper: SessionKeeper, audio: AudioEngine, server_clock: ServerClock, request: RunRequest
) -> SessionRun:
    """A session run as the driver asks for it, with the daemon's broker, audio engine and broker clock."""
    return SessionRun(
        number=request.number,
        pressed_at=request.pressed_at,
        config=request.config.session,
        keeper=keeper,
        audio=audio,
        capture=audio.start_capture(since=request.pressed_at),
        on_caption=request.on_caption,
        agent_state=request.agent_state,
        text_topic=request.config.text_topic,
        server_clock=server_clock,
        trigger=request.trigger,
        short_of_cpu=audio.cpu.short,
    )


def _gpio_part(name: str, make: Callable[[], T]) -> T | None:
    """Open a GPIO part; when the pins cannot be had, say why once and run without it (None).

    A kiosk without its LEDs or button still serves voice wake and the control socket, and a restart would not
    bring the pins back: failing here would only crash-loop.
    """
    from gpiozero.exc import GPIOZeroError

    try:
        return make()
    except (GPIOZeroError, OSError, RuntimeError) as exc:
        log.error(
            "%s unavailable, running without: %s: %s (is a GPIO backend such as lgpio installed, and does the "
            "service user have access to /dev/gpiochip*?)",
            name,
            type(exc).__name__,
            exc,
        )
        return None


async def _check_clock(client: httpx.AsyncClient, url: str | None, server_clock: ServerClock) -> None:
    """Log at start-up how the local clock compares with the broker's (its HTTP ``Date``; a skew warns)."""
    if url is None:
        return
    try:
        await client.head(url, timeout=5.0)
    except httpx.HTTPError as exc:
        log.debug("clock check: the broker did not answer a HEAD request: %s", type(exc).__name__)
        return
    if server_clock.skew_s is not None and not server_clock.wrong:
        log.info("the local clock agrees with the broker's (%+.0f s)", server_clock.skew_s)


async def _stop_when(stop: asyncio.Event, driver: SessionDriver) -> None:
    await stop.wait()
    log.info("stop requested: ending any session and stopping")
    driver.dispatch(sm.Shutdown())


async def _warm_up() -> None:
    """Start LiveKit's native runtime now, so the first press does not pay for loading it."""
    from livekit import rtc

    source = rtc.AudioSource(48000, 1)
    await source.aclose()


def _install_signals(loop: asyncio.AbstractEventLoop, driver: SessionDriver, reloader: Reloader) -> list[int]:
    terms = {"count": 0}

    def on_term(name: str) -> None:
        terms["count"] += 1
        if terms["count"] > 1:
            log.warning("second %s: exiting at once (any open session is ended at the next start)", name)
            logging.shutdown()
            os._exit(1)
        log.info("%s: ending any session and stopping", name)
        driver.dispatch(sm.Shutdown())

    loop.add_signal_handler(signal.SIGTERM, on_term, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_term, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    return [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


def _remove_signals(loop: asyncio.AbstractEventLoop, signals: list[int]) -> None:
    for sig in signals:
        loop.remove_signal_handler(sig)
