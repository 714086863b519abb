"""Serve the kiosk's metrics: over HTTP (``metrics.listen``) and as a file for node_exporter (``metrics.textfile``).

The HTTP server is prometheus_client's WSGI server on its own thread; a scrape only reads metric objects (which
lock internally) and the list of families :meth:`KioskMetrics.sample` last built on the event loop. The text file is
written by prometheus_client's ``write_to_textfile`` (a temporary file beside it, then ``rename``, so the collector
never reads half a file) in a worker thread, every ``metrics.textfile_interval_s`` and once more at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import threading
from collections.abc import Callable
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile

from kiosk import __version__
from kiosk.audio import AudioEngine
from kiosk.broker import SessionKeeper
from kiosk.config import MetricsConfig, is_loopback, parse_listen
from kiosk.daemon.metrics import KioskMetrics
from kiosk.daemon.session_driver import SessionDriver
from kiosk.wakeguard import WakeGate

log = logging.getLogger(__name__)

#: How often the sampled counters (audio, broker, wake gate) are refreshed on the event loop.
SAMPLE_S = 5.0


class MetricsExporter:
    """Runs the HTTP endpoint and the text file writer; ``refresh`` is called on the loop before each export."""

    def __init__(self, *, config: MetricsConfig, registry: CollectorRegistry, refresh: Callable[[], None]) -> None:
        self._config = config
        self._registry = registry
        self._refresh = refresh
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self.address: str | None = None

    async def start(self) -> None:
        """Bind the HTTP endpoint (if configured) and start refreshing; a bind failure is logged, not fatal."""
        self._refresh()
        if self._config.listen is not None:
            host, port = parse_listen(self._config.listen)
            try:
                server, self._thread = await asyncio.to_thread(
                    start_http_server, port, addr=host, registry=self._registry
                )
            except OSError as exc:
                log.error(
                    "metrics: cannot listen on %s (%s): pick a free port in metrics.listen; the kiosk runs on "
                    "without an HTTP endpoint",
                    self._config.listen,
                    exc.strerror or exc,
                )
            else:
                self._server = server
                bound = server.server_address
                self.address = f"{_bracket(str(bound[0]))}:{bound[1]}"
                where = "" if is_loopback(host) else " (reachable from the network: firewall it)"
                log.info("metrics at http://%s/metrics%s", self.address, where)
        if self._config.listen is not None or self._config.textfile is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics")

    async def _run(self) -> None:
        textfile = self._config.textfile
        interval = self._config.textfile_interval_s
        since_write = interval
        while True:
            self._refresh()
            if textfile is not None and since_write >= interval:
                await self._write(textfile)
                since_write = 0.0
            await asyncio.sleep(min(SAMPLE_S, interval))
            since_write += min(SAMPLE_S, interval)

    async def _write(self, path: Path) -> None:
        try:
            await asyncio.to_thread(write_to_textfile, str(path), self._registry)
        except OSError as exc:
            log.warning("metrics: cannot write %s (%s): check metrics.textfile's directory", path, exc.strerror or exc)

    async def close(self) -> None:
        """Stop refreshing, write the text file a last time, stop the HTTP server."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._config.textfile is not None:
            self._refresh()
            await self._write(self._config.textfile)
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)
            self._server.server_close()
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, 2.0)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def open_metrics(
    *, config: MetricsConfig, driver: SessionDriver, keeper: SessionKeeper, audio: AudioEngine, wake_gate: WakeGate
) -> tuple[KioskMetrics, MetricsExporter]:
    """Create the metrics, hook them to the driver and the keeper as observers, and the exporter that serves them."""
    from livekit import rtc

    metrics = KioskMetrics(
        versions={"version": __version__, "livekit": rtc.__version__, "python": platform.python_version()}
    )
    driver.observe(metrics.changed)
    keeper.on_call = metrics.broker_call
    audio.turns.subscribe(metrics.turn)

    def refresh() -> None:
        metrics.sample(
            audio=audio.health(),
            pending_ends=keeper.retrying,
            oldest_pending=keeper.oldest_pending_start(),
            wake_gate=wake_gate,
        )

    return metrics, MetricsExporter(config=config, registry=metrics.registry, refresh=refresh)
