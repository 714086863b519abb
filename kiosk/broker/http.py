"""One JSON POST to a broker: the API key header, bounded jittered retries, and every failure named.

Retries (stamina) happen only on transport errors, 5xx and 429 (waiting what ``Retry-After`` asks when it fits in
the budget), never on another 4xx, and never past the caller's deadline. A request that may already have reached
the broker (a read timeout, a dropped connection) is retried only when the caller says repeating it is harmless:
a repeated *start* could open a second paid session whose room the kiosk never learns.

Such a request, once sent, is read on past the caller's deadline (up to :data:`READ_ON_S` more, however slowly the
answer trickles in): the caller may stop waiting (see :class:`kiosk.broker.keeper.SessionKeeper`), but the answer
names the room a session may have been opened in, and only with it can that session be ended.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import stamina
import stamina.instrumentation

from kiosk.config import BrokerConfig
from kiosk.errors import BrokerError, ConfigError
from kiosk.reasons import FailureReason
from kiosk.secret import SecretSource

from .clock import ServerClock
from .dns import HostLookup, describe_gaierror, gaierror_in
from .policy import scrub, url_for_log

log = logging.getLogger(__name__)


def log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """stamina's retry hook: one sentence per scheduled retry instead of a bare ``stamina.retry_scheduled``."""
    log.warning(
        "broker request failed (%s); retry %d in %.1f s (%.1f s spent retrying so far)",
        details.caused_by,
        details.retry_num,
        details.wait_for,
        details.waited_so_far,
    )


# Process-wide in stamina; the broker is the kiosk's only user of it.
stamina.instrumentation.set_on_retry_hooks([log_retry])

API_KEY_HEADER = "x-api-key"
#: Longest pause between two attempts of one request (the deadline bounds the whole anyway).
RETRY_WAIT_MAX_S = 2.0
#: An attempt is not started with less than this left before the deadline: the last answer is reported instead.
MIN_ATTEMPT_S = 0.25
#: After a connect timeout, how long a fresh lookup of the broker's name may take before DNS counts as down: a
#: working resolver answers a name it was just asked in milliseconds (and this fits in MIN_ATTEMPT_S).
DNS_CHECK_S = 0.2
#: How long past its deadline the answer to a sent request that must not be repeated (a vendor's start) is still
#: read, whether it stalls or trickles in a byte at a time. Vendors answer a start within seconds; a minute more is
#: far past any real answer and still bounds the background request (TCP itself bounds nothing here).
READ_ON_S = 60.0


class BrokerHttpError(BrokerError):
    """A broker failure seen over HTTP: the status (if any answer came), and whether another attempt may help."""

    def __init__(
        self,
        message: str,
        *,
        reason: FailureReason,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


def make_client(broker: BrokerConfig, *, server_clock: ServerClock | None = None) -> httpx.AsyncClient:
    """The one HTTP client the daemon keeps: timeouts from config, TLS always verified (``ca_file`` if set).

    ``server_clock`` follows the broker's ``Date`` header on every answer.
    """
    verify: ssl.SSLContext | bool = True
    if broker.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(broker.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"broker.ca_file: cannot load {broker.ca_file}: {exc}") from None
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(broker.timeout_s),
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=300.0),
        headers={"user-agent": "kiosk-broker-client"},
        event_hooks={"response": [server_clock.observe]} if server_clock is not None else None,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _broker_message(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text
    for _ in range(3):
        if isinstance(body, dict):
            for key in ("message", "detail", "error", "msg", "error_description"):
                if body.get(key):
                    body = body[key]
                    break
            else:
                return str(body)
        else:
            break
    return str(body)


class BrokerHttp:
    """Posts JSON to one broker with its API key; returns the parsed body or raises a named :class:`BrokerError`."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        dialect: str,
        timeout_s: float,
        secret: SecretSource | None,
    ) -> None:
        self._client = client
        self._dialect = dialect
        self._timeout_s = timeout_s
        self._secret = secret
        self._lookup = HostLookup()

    def __repr__(self) -> str:
        return f"BrokerHttp(dialect={self._dialect!r}, secret={self._secret!r})"

    async def post(self, url: str, body: Mapping[str, Any], *, deadline: float, repeatable: bool, what: str) -> Any:
        """POST ``body`` to ``url``; retry what may be retried until ``deadline`` (``time.monotonic()``)."""
        last: list[BrokerError] = []
        failures = [0]

        def retry_hook(exc: BaseException) -> bool | float:
            """The wait before the next attempt (s), or False when no attempt fits before the deadline any more.

            Stopping early hands the broker's own answer (a 503, a refusal) to the caller before its deadline,
            rather than a bare timeout at it.
            """
            if not isinstance(exc, BrokerHttpError) or not exc.retryable:
                return False
            failures[0] += 1
            wait = exc.retry_after
            if wait is None:
                # stamina's own backoff (initial 0.1 s, doubling, capped, with up to 0.5 s of jitter).
                wait = min(RETRY_WAIT_MAX_S, 0.1 * 2 ** (failures[0] - 1)) + random.uniform(0.0, 0.5)  # noqa: S311
            return wait if wait + MIN_ATTEMPT_S < deadline - time.monotonic() else False

        async def attempts() -> Any:
            async for attempt in stamina.retry_context(
                on=retry_hook,
                attempts=None,
                timeout=max(0.001, deadline - time.monotonic()),
                wait_initial=0.1,
                wait_max=RETRY_WAIT_MAX_S,
                wait_jitter=0.5,
            ):
                with attempt:
                    if attempt.num > 1:
                        log.info("%s: %s attempt %d", self._dialect, what, attempt.num)
                    try:
                        return await self._once(
                            url, body, deadline=deadline, read_deadline=hard_deadline, repeatable=repeatable, what=what
                        )
                    except BrokerError as exc:
                        last[:] = [exc]
                        raise
            raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

        if deadline - time.monotonic() <= 0:
            raise BrokerError(
                f"{self._dialect}: no time left in the budget for the {what}", reason=FailureReason.BROKER_TIMEOUT
            )
        # An answer to a request that must not be repeated (a vendor's start, which may have opened a paid session)
        # is read to its end even past the deadline, for up to READ_ON_S more: cut off, its room would be lost and
        # the session could not be ended. The caller ends a session whose start came too late.
        hard_deadline = deadline if repeatable else deadline + READ_ON_S
        loop_deadline = asyncio.get_running_loop().time() + (hard_deadline - time.monotonic())
        try:
            async with asyncio.timeout_at(loop_deadline):
                return await attempts()
        except TimeoutError:
            if last:
                raise last[0] from None
            raise BrokerError(
                f"{self._dialect}: the {what} did not finish within the time budget",
                reason=FailureReason.BROKER_TIMEOUT,
            ) from None

    async def _dns_problem(self, url: str, deadline: float) -> str | None:
        """After a connect that timed out: whether the broker's name resolves now (within :data:`DNS_CHECK_S`)."""
        within = min(DNS_CHECK_S, max(0.05, deadline - time.monotonic() - 0.05))
        return await self._lookup.check(url, within_s=within)

    def _key(self) -> str | None:
        return None if self._secret is None else self._secret.get().get_secret_value()

    async def _once(
        self, url: str, body: Mapping[str, Any], *, deadline: float, read_deadline: float, repeatable: bool, what: str
    ) -> Any:
        key = self._key()
        headers = {"content-type": "application/json", "accept": "application/json"}
        if key is not None:
            headers[API_KEY_HEADER] = key
        now = time.monotonic()
        # The connect gives up a moment before the deadline, so that its own verdict (unresolvable, unreachable)
        # reaches a caller that stops waiting at the deadline.
        budget = max(0.05, min(self._timeout_s, deadline - now - MIN_ATTEMPT_S))
        # Connecting is bounded by the deadline; once a start that must not be repeated was sent, its answer is
        # awaited until ``read_deadline`` however long each byte takes: a vendor may have opened a paid session
        # that only the answer names.
        read_budget = budget if repeatable else max(budget, read_deadline - now)
        timeout = httpx.Timeout(read_budget, connect=budget, pool=budget)
        where = url_for_log(url)
        secrets = [key] if key else []
        try:
            response = await self._client.post(url, json=dict(body), headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            unsent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            if isinstance(exc, httpx.ConnectTimeout) and (dns := await self._dns_problem(url, deadline)):
                raise BrokerHttpError(
                    f"{self._dialect}: {dns}", reason=FailureReason.BROKER_UNRESOLVABLE, retryable=True
                ) from None
            raise BrokerHttpError(
                f"{self._dialect}: the broker at {where} did not answer the {what} within {read_budget:.1f} s",
                reason=FailureReason.BROKER_TIMEOUT,
                retryable=unsent or repeatable,
            ) from None
        except httpx.ConnectError as exc:
            if (error := gaierror_in(exc)) is not None:
                host = urlsplit(url).hostname or where
                raise BrokerHttpError(
                    f"{self._dialect}: {describe_gaierror(host, error)}",
                    reason=FailureReason.BROKER_UNRESOLVABLE,
                    retryable=True,
                ) from None
            detail = scrub(str(exc) or type(exc).__name__, secrets=secrets)
            hint = " (check broker.ca_file and the system clock)" if "CERTIFICATE" in detail.upper() else ""
            raise BrokerHttpError(
                f"{self._dialect}: cannot reach the broker at {where}: {detail}{hint}",
                reason=FailureReason.BROKER_UNREACHABLE,
                retryable=True,
            ) from None
        except httpx.TransportError as exc:
            retry = repeatable and isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)
            detail = scrub(str(exc) or type(exc).__name__, secrets=secrets)
            raise BrokerHttpError(
                f"{self._dialect}: the connection to the broker at {where} failed during the {what}: {detail}",
                reason=FailureReason.BROKER_UNREACHABLE,
                retryable=retry,
            ) from None
        return self._parse(response, where=where, secrets=secrets, what=what)

    def _parse(self, response: httpx.Response, *, where: str, secrets: list[str], what: str) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                raise BrokerHttpError(
                    f"{self._dialect}: malformed broker response: the {what} answer from {where} is not JSON",
                    reason=FailureReason.BROKER_MALFORMED,
                    status=status,
                ) from None
        message = scrub(_broker_message(response), secrets=secrets) or response.reason_phrase
        prefix = f"{self._dialect}: {what} at {where}: HTTP {status}"
        if status in (401, 403):
            raise BrokerHttpError(
                f"{prefix}: the broker refused the API key ({message}); check the key the config points to",
                reason=FailureReason.BROKER_UNAUTHORIZED,
                status=status,
            )
        if status == 429:
            raise BrokerHttpError(
                f"{prefix}: rate limited ({message})",
                reason=FailureReason.BROKER_REJECTED,
                status=status,
                retryable=True,
                retry_after=_retry_after(response),
            )
        if status >= 500:
            raise BrokerHttpError(
                f"{prefix}: broker error ({message})",
                reason=FailureReason.BROKER_ERROR,
                status=status,
                retryable=True,
                retry_after=_retry_after(response) if status == 503 else None,
            )
        if 300 <= status < 400:
            message = f"redirected to {url_for_log(response.headers.get('location', '?'))}; set broker.url to it"
        raise BrokerHttpError(f"{prefix}: rejected: {message}", reason=FailureReason.BROKER_REJECTED, status=status)
