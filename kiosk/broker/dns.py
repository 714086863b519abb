"""Telling "the broker's name does not resolve" apart from "the broker does not answer".

httpx resolves the broker's host name inside its TCP connect (anyio calls ``loop.getaddrinfo``, which runs the C
resolver in the loop's default executor: the event loop is never blocked by it). A failed lookup reaches the kiosk as
a ``socket.gaierror`` (RFC 3493 ``getaddrinfo`` error codes, glibc's ``EAI_*``) behind httpx's ``ConnectError``; a
resolver that does not answer at all only shows as a connect timeout. After such a timeout :class:`HostLookup`
resolves the name once more, briefly (one lookup in flight per host, never a pile of blocked resolver threads): if
that does not answer either, DNS is what is down. Both are ``broker_unresolvable``, with the fix in words.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

RESOLVER_HINT = "check the network's DNS server (`resolvectl status`, /etc/resolv.conf) and the network link"


def _literal(host: str) -> bool:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host.strip("[]"))
        return True
    return False


def gaierror_in(exc: BaseException) -> socket.gaierror | None:
    """The ``socket.gaierror`` behind ``exc`` (httpx wraps httpcore's wrap of it), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, socket.gaierror):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_gaierror(host: str, error: socket.gaierror) -> str:
    """What a failed lookup of ``host`` means for the operator, and what to check."""
    if error.errno in {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}:
        return (
            f"the broker's host name {host!r} does not exist in DNS ({error.strerror}): check broker.url for a typo, "
            f"then {RESOLVER_HINT}"
        )
    if error.errno == socket.EAI_AGAIN:
        return f"no DNS server answered for the broker's host name {host!r} ({error.strerror}): {RESOLVER_HINT}"
    return f"the broker's host name {host!r} cannot be resolved ({error.strerror}): {RESOLVER_HINT}"


class HostLookup:
    """One ``getaddrinfo`` of the broker's host at a time, run on the loop's executor, kept for the failure path."""

    def __init__(self) -> None:
        self._lookups: dict[tuple[str, int], asyncio.Future[object]] = {}

    async def check(self, url: str, *, within_s: float) -> str | None:
        """Why ``url``'s host does not resolve (waiting ``within_s`` at most for the lookup), or None if it does."""
        parts = urlsplit(url)
        host = parts.hostname
        if not host or _literal(host):
            return None
        port = parts.port or (443 if parts.scheme in {"https", "wss"} else 80)
        key = (host, port)
        lookup = self._lookups.get(key)
        if lookup is None or lookup.done():
            lookup = asyncio.ensure_future(_resolve(host, port))
            lookup.add_done_callback(_retrieve)
            self._lookups[key] = lookup
        await asyncio.wait({lookup}, timeout=within_s)
        if not lookup.done():
            return f"the DNS lookup of the broker's host name {host!r} did not answer: {RESOLVER_HINT}"
        error = None if lookup.cancelled() else lookup.exception()
        return describe_gaierror(host, error) if isinstance(error, socket.gaierror) else None


async def _resolve(host: str, port: int) -> object:
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _retrieve(lookup: asyncio.Future[object]) -> None:
    """Mark a lookup's failure as seen: it is reported only when an attempt fails too."""
    if not lookup.cancelled():
        lookup.exception()


class DaemonThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """The daemon's default executor: each call on a daemon thread of its own; ``shutdown`` never waits.

    ``loop.getaddrinfo`` (httpx's DNS) runs here. Against a resolver that does not answer, glibc's lookup blocks its
    thread for ``timeout`` x ``attempts`` x servers (resolv.conf(5)); asyncio's own executor would then hold up the
    daemon's exit (``asyncio.run`` and the interpreter join its threads) past systemd's stop timeout. A
    ``ThreadPoolExecutor`` only by type (``loop.set_default_executor`` requires one): its pool is never used.
    """

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="kiosk-unused")

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` on a new daemon thread."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine, as ThreadPoolExecutor does
                future.set_exception(exc)

        threading.Thread(target=work, name=f"kiosk-executor-{getattr(fn, '__name__', 'call')}", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to wait for: a call still running (a hung DNS lookup) must not keep the daemon from exiting."""
