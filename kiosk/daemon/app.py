"""``run()``: the daemon from top to bottom.

Validate the config before touching hardware, open the components, install signal handlers, ``READY=1``, wait for
shutdown, ``STOPPING=1``, end any live session at the broker, tear down in reverse, return an exit code.
Exit codes: 0 clean stop, 78 bad config (systemd does not restart), 69 a device could not be opened, 75 a hold asked
for a restart.
"""

from __future__ import annotations

import asyncio
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
from kiosk.config import KioskConfig, LedConfig
from kiosk.configfile import EX_CONFIG, load_config
from kiosk.daemon.control import ControlServer, EventBus
from kiosk.daemon.controls import DeviceControls
from kiosk.daemon.driver import Driver
from kiosk.daemon.logsetup import setup_logging
from kiosk.daemon.metrics_export import open_metrics
from kiosk.daemon.notify import Notifier
from kiosk.daemon.observers import Observers
from kiosk.daemon.policy import EX_TEMPFAIL, Policy
from kiosk.daemon.reload import Reloader
from kiosk.daemon.sessionrun import SessionRun, SessionSummary
from kiosk.errors import ConfigError, SecretError
from kiosk.leds import StatusLeds
from kiosk.secret import SecretSource
from kiosk.trigger import ButtonTrigger
from kiosk.wakeguard import WakeGate

log = logging.getLogger(__name__)
T = TypeVar("T")

EX_UNAVAILABLE = 69
__all__ = ["EX_TEMPFAIL", "EX_UNAVAILABLE", "run"]
#: How long shutdown waits for a session to close: a start under way (up to 8 s), its end, leaving the room.
SHUTDOWN_BUDGET_S = 12.0


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
    loop = asyncio.get_running_loop()
    notifier = Notifier()

    # 2. Components: broker client, audio, LEDs, button, control socket.
    server_clock = ServerClock()
    try:
        client = make_client(config.broker, server_clock=server_clock)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return EX_CONFIG
    try:
        broker = make_broker(config, client=client, secret=secret)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        await client.aclose()
        return EX_CONFIG
    keeper = SessionKeeper(
        broker=broker,
        ledger=SessionLedger(config.daemon.state_dir),
        end_timeout_s=config.broker.timeout_s,
        end_retry_max_s=config.broker.end_retry_max_s,
    )
    audio = AudioEngine(audio=config.audio, trigger=config.trigger, stream_factory=stream_factory)
    # A device missing now (a USB microphone not yet enumerated) is opened when it appears: the daemon becomes
    # ready and shows the fault rather than exiting into systemd's restart limit.
    await audio.start(missing_ok=True)
    audio.idle_processing = config.trigger.voice_wake
    await _warm_up()
    events = EventBus()
    holder: dict[str, Driver] = {}

    def make_run(number: int, pressed_at: float | None) -> SessionRun:
        return SessionRun(
            number=number,
            pressed_at=pressed_at,
            config=holder["driver"].config.session,
            keeper=keeper,
            audio=audio,
            capture=audio.start_capture(since=pressed_at),
            on_caption=observers.caption,
            text_topic=holder["driver"].config.text_topic,
            server_clock=server_clock,
            trigger=holder["driver"].snapshot.trigger,
        )

    wake_gate = WakeGate(config=config.trigger)
    driver = Driver(config=config, make_run=make_run, wake_gate=wake_gate)
    holder["driver"] = driver
    leds = _gpio_part(
        "status LEDs", lambda: StatusLeds(config=config.leds, pin_factory=pin_factory, level=audio.agent_level)
    )
    leds = leds or StatusLeds(config=LedConfig(), pin_factory=pin_factory)
    observers = Observers(driver=driver, notifier=notifier, audio=audio, leds=leds, events=events)
    controls = DeviceControls(config=config, audio=audio, on_change=observers.controls_changed, on_mute=leds.set_muted)
    controls.open_buttons(config, loop=loop, pin_factory=pin_factory, opener=_gpio_part)
    observers.controls = controls
    driver.on_wake_refused = observers.wake_refused
    metrics, exporter = open_metrics(
        config=config.metrics, driver=driver, keeper=keeper, audio=audio, wake_gate=wake_gate
    )

    def summarised(summary: SessionSummary) -> None:
        metrics.session_done(summary)
        if on_summary is not None:
            on_summary(summary)

    policy = Policy(driver=driver, max_sessions=max_sessions, on_summary=summarised)
    driver.on_summary = policy.session_done

    def on_vad(event: VadEvent) -> None:
        if event.kind == VadEventKind.WAKE and driver.config.trigger.voice_wake:
            driver.wake(event.speech_start, level_dbfs=event.level_dbfs)

    trigger = None
    if config.trigger.button_pin is not None:
        trigger = _gpio_part(
            "button",
            lambda: ButtonTrigger(config=config.trigger, loop=loop, on_event=policy.button, pin_factory=pin_factory),
        )
    audio.subscribe_vad(on_vad)
    audio.subscribe_health(observers.audio_health)
    control = ControlServer(
        path=config.control.socket, mode=config.control.socket_mode, controller=observers, events=events
    )
    # The metrics listener first: once the control socket answers, `kiosk status` names it.
    await exporter.start()
    observers.metrics_address = exporter.address
    try:
        await control.start()
    except OSError as exc:
        log.error("control socket: %s", exc)
        await exporter.close()
        await controls.aclose()
        await _close_all(trigger, leds, audio, keeper, client)
        return EX_UNAVAILABLE

    deafness = DeafnessWatch(engine=audio, probe=PulseProbe(), digital_silence_s=config.audio.digital_silence_s)
    driver.observe(lambda _, new: deafness.arm() if new.state == sm.State.LIVE else deafness.disarm())
    # Learn where the microphone stream is before anyone can press (a stream moved later is then told apart).
    await deafness.check()
    deafness.start(loop)

    # 3. Signals, then ready.
    def reloaded(new: KioskConfig) -> None:
        audio.idle_processing = new.trigger.voice_wake
        wake_gate.config = new.trigger

    reloader = Reloader(config_path=config_path, driver=driver, notifier=notifier, on_reload=reloaded)
    signals = _install_signals(loop, driver, reloader)

    if stop is not None:
        stopper = loop.create_task(_stop_when(stop, driver), name="stop")
    recovery = loop.create_task(keeper.recover(), name="recover")
    clock_check = loop.create_task(_check_clock(client, config.broker.url, server_clock), name="clock")
    watchdog = loop.create_task(notifier.watchdog(), name="watchdog")
    observers.start()
    notifier.ready(observers.status_line(driver.snapshot))
    log.info("kiosk ready (%s broker, identity %s)", config.broker.dialect, config.device.identity)

    # 4. Wait for shutdown; the driver exits once no session is open.
    await driver.exited.wait()
    notifier.stopping()
    log.info("stopping")

    # 5. Teardown in reverse.
    await driver.wait_idle(SHUTDOWN_BUDGET_S)
    for sig in signals:
        loop.remove_signal_handler(sig)
    watchdog.cancel()
    recovery.cancel()
    clock_check.cancel()
    if stop is not None:
        stopper.cancel()
    await control.close()
    await exporter.close()
    await controls.aclose()
    await deafness.stop()
    await _close_all(trigger, leds, audio, keeper, client)
    return policy.exit_code


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


async def _stop_when(stop: asyncio.Event, driver: Driver) -> None:
    await stop.wait()
    log.info("stop requested: ending any session and stopping")
    driver.dispatch(sm.Shutdown())


async def _warm_up() -> None:
    """Start LiveKit's native runtime now, so the first press does not pay for loading it."""
    from livekit import rtc

    source = rtc.AudioSource(48000, 1)
    await source.aclose()


async def _close_all(
    trigger: ButtonTrigger | None, leds: StatusLeds, audio: AudioEngine, keeper: SessionKeeper, client: Any
) -> None:
    if trigger is not None:
        trigger.close()
    leds.close()
    await audio.close()
    await keeper.aclose()
    await client.aclose()


def _install_signals(loop: asyncio.AbstractEventLoop, driver: Driver, reloader: Reloader) -> list[int]:
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
