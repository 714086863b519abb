"""SIGHUP: read the config again; a bad new config is refused and the old one kept.

Settings read per session (``[session]``, ``trigger.voice_wake`` and the cooldown, log level) take effect at once;
the rest (broker, audio devices, pins, the control socket) need a restart, which the log says.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kiosk.configfile import load_config
from kiosk.daemon.driver import Driver
from kiosk.daemon.notify import Notifier
from kiosk.errors import ConfigError

log = logging.getLogger(__name__)
LIVE_SECTIONS = ("session", "trigger", "daemon")


class Reloader:
    """Applies a new config on SIGHUP."""

    def __init__(self, *, config_path: Path, driver: Driver, notifier: Notifier) -> None:
        self._path = config_path
        self._driver = driver
        self._notifier = notifier

    def reload(self) -> bool:
        """Reload now; True when the new config was taken."""
        self._notifier.reloading()
        try:
            new = load_config(self._path)
        except ConfigError as exc:
            log.error("SIGHUP: refusing the new config, keeping the old one: %s", exc)
            self._notifier.notify("READY=1")
            return False
        old = self._driver.config
        restart = [
            name
            for name in type(old).model_fields
            if name not in LIVE_SECTIONS and getattr(old, name) != getattr(new, name)
        ]
        live_trigger = {"voice_wake", "cooldown_s", "hold_action"}
        trigger_hw = old.trigger.model_dump(exclude=live_trigger) != new.trigger.model_dump(exclude=live_trigger)
        self._driver.config = new
        logging.getLogger().setLevel(new.daemon.log_level.upper())
        log.info("SIGHUP: config reloaded from %s", self._path)
        if restart or trigger_hw:
            changed = restart + (["trigger (pins/VAD)"] if trigger_hw else [])
            log.warning("changes to %s take effect after a restart: systemctl restart kiosk", ", ".join(changed))
        self._notifier.notify("READY=1")
        return True
