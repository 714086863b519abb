"""Running the screen: read its access token, follow the daemon, serve the page until cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from kiosk.config import KioskConfig, ScreenConfig
from kiosk.errors import ConfigError
from kiosk.screen.feed import ControlFeed
from kiosk.screen.server import make_app

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16


def read_token(config: ScreenConfig) -> str | None:
    """The access token from ``screen.token_file`` or ``screen.token_env``, or None when neither is set.

    Raises:
        ConfigError: the file cannot be read, the variable is unset, or the token is shorter than 16 characters.
    """
    if config.token_file is not None:
        try:
            token = config.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"screen.token_file {config.token_file}: cannot read it ({exc.strerror})") from None
        where = f"screen.token_file {config.token_file}"
    elif config.token_env is not None:
        token = os.environ.get(config.token_env, "").strip()
        if not token:
            raise ConfigError(f"screen.token_env: the environment variable {config.token_env} is not set")
        where = f"screen.token_env {config.token_env}"
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters; make one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return token


class ScreenService:
    """The page's server and the daemon feed, started together and stopped together.

    Raises:
        ConfigError: (from the constructor) the access token named by the config cannot be read or is too short.
    """

    def __init__(
        self,
        *,
        config: KioskConfig,
        socket: Path | None = None,
        port: int | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._config = config.screen
        self._name = config.device.name
        self._port = config.screen.port if port is None else port
        self._token = read_token(config.screen)
        self.feed = ControlFeed(socket=socket or config.control.socket, labels=config.screen.labels, on_event=on_event)
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> str:
        """Bind the page's address and start following the daemon; returns the page's URL.

        Raises:
            OSError: the address is taken or cannot be bound.
        """
        app = make_app(config=self._config, name=self._name, feed=self.feed, token=self._token)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._config.bind, self._port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        self._task = asyncio.get_running_loop().create_task(self.feed.run(), name="screen-feed")
        log.info("screen at %s (following %s)", self.url, self.feed.socket)
        return self.url

    async def close(self) -> None:
        """Stop following the daemon and close the page's server (open pages reconnect to the next one)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()
