"""SIGHUP: read the config again; a bad new config is refused and the old one kept.

Settings read per session (``[session]``, voice wake, the cooldown, the hold action, log level) take effect at once;
the rest (broker, audio devices, pins, the control socket) need a restart, which the log says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from kiosk.config import KioskConfig
from kiosk.configfile import load_config
from kiosk.daemon.notify import Notifier
from kiosk.daemon.session_driver import SessionDriver
from kiosk.errors import ConfigError

log = logging.getLogger(__name__)


class Reloader:
    """Applies a new config on SIGHUP."""

    def __init__(
        self,
        *,
        config_path: Path,
        driver: SessionDriver,
        notifier: Notifier,
        on_reload: Callable[[KioskConfig], None] | None = None,
    ) -> None:
        self._path = config_path
        self._driver = driver
        self._notifier = notifier
        self._on_reload = on_reload

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
        # What a running daemon can take at once; everything else is read when it starts.
        wake = {
            "voice_wake",
            "cooldown_s",
            "wake_min_dbfs",
            "wake_max_per_hour",
            "wake_backoff_s",
            "wake_backoff_max_s",
        }
        live = {"session": None, "trigger": {*wake, "hold_action"}, "daemon": {"log_level"}}
        restart = []
        for name in type(old).model_fields:
            before, after = getattr(old, name), getattr(new, name)
            if name in live:
                fields = live[name]
                if fields is not None and before.model_dump(exclude=fields) != after.model_dump(exclude=fields):
                    restart.append(name)
            elif before != after:
                restart.append(name)
        self._driver.config = new
        if self._on_reload is not None:
            self._on_reload(new)
        logging.getLogger().setLevel(new.daemon.log_level.upper())
        log.info("SIGHUP: config reloaded from %s", self._path)
        if restart:
            log.warning("changes to [%s] take effect after a restart: systemctl restart kiosk", "], [".join(restart))
        self._notifier.notify("READY=1")
        return True
