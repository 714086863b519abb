"""``kiosk doctor [--platform | --broker [--room]]``: can this machine run the kiosk, and does its broker work?

First the platform facts (:mod:`kiosk.commands.platform_facts`: 64-bit userland, the C library the livekit wheel
needs, the GPIO pin factory, the sound cards), each with its fix when wrong; ``--platform`` stops there and needs no
config. Then a real session with the configured broker: started, checked, ended. Each step prints one line with its
outcome and time, e.g. ``[ok]   broker start   room kiosk-… at wss://…  123 ms``. The session is recorded in
``daemon.state_dir`` like the daemon's and ended at the broker on every path.
Exit status: 0 when every step passed, 1 on any failure or a platform fact the kiosk cannot run with (its named
reason is printed), 78 for a config error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kiosk.broker import (
    ConnectionDetails,
    ServerClock,
    SessionKeeper,
    SessionLedger,
    TokenClaims,
    clock_problem,
    decode_token,
    make_broker,
    make_client,
)
from kiosk.broker.clock import TIME_SYNC_HINT
from kiosk.broker.policy import insecure_url_problem, url_for_log
from kiosk.cliformat import HelpFormatter, describe
from kiosk.commands.platform_facts import platform_facts
from kiosk.config import KioskConfig
from kiosk.configfile import EX_CONFIG, load_config, resolve_path
from kiosk.errors import BrokerError, ClockError, ConfigError, ConnectError, KioskError, SecretError
from kiosk.reasons import FailureReason
from kiosk.secret import SecretSource

EXIT_FAILED = 1
#: How long ``--room`` waits for another participant (the agent) after joining, at most.
PARTICIPANT_WAIT_S = 5.0
ROOM_SETTLE_S = 0.2


@dataclasses.dataclass
class Step:
    """One step's outcome, filled in by the step's body."""

    detail: str = ""


class Report:
    """Prints one line per step (a JSON object per line with ``as_json``) and remembers the first failure's reason."""

    def __init__(self, *, as_json: bool = False) -> None:
        self.failure: FailureReason | None = None
        #: The platform facts the kiosk cannot run with.
        self.platform_wrong: list[str] = []
        self.warnings = 0
        self.as_json = as_json

    def line(self, mark: str, name: str, detail: str, elapsed_ms: float | None, *, fix: str | None = None) -> None:
        """Print one step line (and its fix, when given, on the next)."""
        if self.as_json:
            ms = None if elapsed_ms is None else round(elapsed_ms, 1)
            entry = {"step": name, "result": mark, "detail": detail, "ms": ms}
            print(json.dumps(entry | ({"fix": fix} if fix else {})), flush=True)
            return
        timing = f"  {elapsed_ms:.0f} ms" if elapsed_ms is not None else ""
        print(f"[{mark}]".ljust(7) + f"{name:<14} {detail}{timing}", flush=True)
        if fix:
            print(" " * 7 + f"{'':<14} fix: {fix}", flush=True)

    def platform(self) -> None:
        """One line per platform fact: ok, warn (it runs, with less) or FAIL (it cannot run), with the fix."""
        for fact in platform_facts():
            mark = {True: "ok", None: "warn", False: "FAIL"}[fact.ok]
            if fact.ok is False:
                self.platform_wrong.append(fact.name)
            self.warnings += fact.ok is None
            self.line(mark, fact.name, fact.detail, None, fix=fact.fix)

    @property
    def failed(self) -> bool:
        """True when a step failed or a platform fact rules the kiosk out."""
        return self.failure is not None or bool(self.platform_wrong)

    def end(self) -> None:
        """The closing line: all passed, or the first failure's reason."""
        wrong = f"platform: {', '.join(self.platform_wrong)}" if self.platform_wrong else None
        reason = self.failure or wrong
        if self.as_json:
            print(json.dumps({"result": "failed" if self.failed else "passed", "failure": reason}), flush=True)
        elif self.failed:
            print(f"doctor: FAILED ({reason})", flush=True)
        else:
            warned = f" ({self.warnings} warning{'s' if self.warnings != 1 else ''}: see their fix lines)"
            print("doctor: all checks passed" + (warned if self.warnings else ""), flush=True)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Time the body; print ok, or FAIL with the error's reason (KioskError is not re-raised)."""
        started = time.monotonic()
        step = Step()
        try:
            yield step
        except KioskError as exc:
            self.failure = self.failure or exc.reason
            self.line("FAIL", name, f"{exc.reason}: {exc}", (time.monotonic() - started) * 1e3)
            raise _StepFailed from None
        self.line("ok", name, step.detail, (time.monotonic() - started) * 1e3)


class _StepFailed(Exception):
    """A step failed and was reported; the remaining checks are skipped."""


def _check_url(grant: ConnectionDetails) -> str:
    """The LiveKit URL must be wss:// (or ws:// on loopback)."""
    problem = insecure_url_problem(grant.server_url)
    if problem is not None:
        raise BrokerError(f"LiveKit URL: {problem}", reason=FailureReason.BROKER_MALFORMED)
    return url_for_log(grant.server_url)


def _check_token(grant: ConnectionDetails) -> TokenClaims:
    """The token must decode as a JWT whose video grant joins the granted room."""
    claims = decode_token(grant.token.get_secret_value(), dialect=grant.dialect)
    if not claims.room_join or claims.room != grant.room:
        raise BrokerError(
            f"the token's video grant is for room {claims.room!r} (roomJoin={claims.room_join}), "
            f"not for the granted room {grant.room!r}",
            reason=FailureReason.BROKER_MALFORMED,
        )
    return claims


def _check_expiry(
    grant: ConnectionDetails, claims: TokenClaims, clock: ServerClock, *, connect_s: float, now: float | None = None
) -> str:
    """The token's window against the broker's clock (its HTTP ``Date``) and the local one; raises on a problem.

    A token must still be valid for ``connect_s`` (``session.connect_timeout_s``, s) after it arrived, by the broker's
    clock and by the local one: the LiveKit server refuses an expired token at the join (livekit-server's auth checks
    ``exp``), and joining may take that long.

    Raises:
        BrokerError: by the broker's own clock the token had expired (or was not yet valid) when it arrived, or it
            expires before a session could connect.
        ClockError: the local clock disagrees with the broker's, or the token looks unusable by it.
    """
    local = time.time() if now is None else now
    where = f"local clock {dt.datetime.fromtimestamp(local, dt.UTC).isoformat(timespec='seconds')}"
    expires = claims.expires_at.isoformat(timespec="seconds")
    if clock.skew_s is not None:
        broker_now = local - clock.skew_s
        server_problem = clock_problem(claims, now=broker_now)
        left_s = claims.expires_at.timestamp() - broker_now
        if server_problem is None and left_s <= 0:
            server_problem = f"the token expired at {expires}, {-left_s:.0f} s before the broker's own time"
        if server_problem is not None:
            raise BrokerError(
                f"the token is not valid even by the broker's own clock ({server_problem.replace('local', 'broker')}): "
                "the broker hands out unusable tokens; ask its operator",
                reason=FailureReason.BROKER_MALFORMED,
            )
        if left_s < connect_s:
            raise BrokerError(
                f"by the broker's own clock the token expires {left_s:.0f} s after it arrived (at {expires}), less "
                f"than the {connect_s:g} s a session may take to connect (session.connect_timeout_s): the broker's "
                "token lifetime is too short; ask its operator for longer-lived tokens",
                reason=FailureReason.BROKER_MALFORMED,
            )
        where += f", {abs(clock.skew_s):.0f} s {clock.describe()} the broker's"
        if clock.wrong:
            raise ClockError(
                f"the local clock is {clock.describe()} the broker's by {abs(clock.skew_s):.0f} s: {TIME_SYNC_HINT}"
            )
    local_problem = clock_problem(claims, now=local)
    local_left_s = grant.expires_in_s(now=local)
    if local_problem is None and clock.skew_s is None and local_left_s < connect_s:
        local_problem = (
            f"by the local clock the token expires in {local_left_s:.0f} s (at {expires}), less than the {connect_s:g} s "
            "a session may take to connect (session.connect_timeout_s); the broker sent no Date header to tell "
            "whether the clock or the token lifetime is wrong"
        )
    if local_problem is not None:
        raise ClockError(f"{local_problem}: {TIME_SYNC_HINT}")
    return f"valid until {expires} (in {local_left_s:.0f} s; {where})"


async def _join_room(grant: ConnectionDetails, config: KioskConfig) -> str:
    """Join the granted room, wait briefly for the agent, leave; describe who was seen."""
    from livekit import rtc  # imported only for --room: it loads the native SDK

    room = rtc.Room()
    seen = asyncio.Event()
    room.on("participant_connected", lambda _participant: seen.set())
    timeout_s = config.session.connect_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            await room.connect(grant.server_url, grant.token.get_secret_value(), rtc.RoomOptions(auto_subscribe=False))
    except TimeoutError:
        await asyncio.wait_for(room.disconnect(), 5.0)
        raise ConnectError(
            f"joining the room took longer than session.connect_timeout_s ({timeout_s} s); WebRTC needs a "
            "non-loopback network interface",
            reason=FailureReason.CONNECT_TIMEOUT,
        ) from None
    except rtc.ConnectError as exc:
        raise ConnectError(f"the LiveKit server refused the join: {exc.message}") from None
    try:
        if not room.remote_participants:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.wait(), min(PARTICIPANT_WAIT_S, config.session.agent_join_timeout_s))
        people = [
            f"{p.identity} ({'agent' if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT else 'participant'})"
            for p in room.remote_participants.values()
        ]
    finally:
        await asyncio.wait_for(room.disconnect(), 5.0)
        # Let the native SDK deliver its last events before the interpreter (and the SDK's runtime) shuts down.
        await asyncio.sleep(ROOM_SETTLE_S)
    return f"joined {grant.room}; participants seen: {', '.join(people) or 'none'}"


def _ledger(config: KioskConfig, report: Report) -> SessionLedger:
    ledger = SessionLedger(config.daemon.state_dir)
    try:
        ledger.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = ledger.directory / ".doctor-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="kiosk-doctor-"))
        report.line(
            "warn",
            "state dir",
            f"{ledger.directory} is not writable ({exc.strerror}); recording this session in {fallback} instead",
            None,
        )
        return SessionLedger(fallback)
    return ledger


async def _run(config: KioskConfig, *, join: bool, report: Report) -> None:
    source = SecretSource.from_broker(config.broker)
    server_clock = ServerClock()
    async with make_client(config.broker, server_clock=server_clock) as client:
        broker = make_broker(config, client=client, secret=source)  # ConfigError (exit 78) before any request
        if source is not None:
            with report.step("api key") as step:
                status = source.status()
                if not status.readable:
                    raise SecretError(status.describe())
                step.detail = status.describe() + (f"; warning: {status.warning}" if status.warning else "")
        keeper = SessionKeeper(
            broker=broker,
            ledger=_ledger(config, report),
            end_timeout_s=config.broker.timeout_s,
            end_retry_max_s=config.broker.end_retry_max_s,
        )
        with report.step("broker start") as step:
            started = await keeper.start(deadline=time.monotonic() + config.session.connect_timeout_s)
            step.detail = f"room {started.grant.room} at {url_for_log(started.grant.server_url)}"
        try:
            grant = started.grant
            with report.step("server url") as step:
                step.detail = _check_url(grant)
            with report.step("token") as step:
                claims = _check_token(grant)
                step.detail = f"JWT with a video grant to join {claims.room}, identity {claims.identity or '?'}"
            with report.step("clock") as step:
                step.detail = _check_expiry(grant, claims, server_clock, connect_s=config.session.connect_timeout_s)
            if join:
                with report.step("room join") as step:
                    step.detail = await _join_room(started.grant, config)
        finally:
            try:
                with report.step("broker end") as step:
                    if not await keeper.end(started):
                        raise BrokerError(
                            f"the broker did not confirm the end of room {started.grant.room}; its record stays "
                            f"in {keeper.ledger.directory} and the daemon ends it at its next start",
                            reason=FailureReason.BROKER_ERROR,
                        )
                    step.detail = f"ended room {started.grant.room}"
            finally:
                await keeper.aclose()


def main(argv: list[str]) -> int:
    """Run ``kiosk doctor``."""
    parser = argparse.ArgumentParser(prog="kiosk doctor", description=describe(__doc__), formatter_class=HelpFormatter)
    parser.add_argument(
        "--platform", action="store_true", help="only the platform facts (64-bit, C library, GPIO, sound cards)"
    )
    parser.add_argument(
        "--broker", action="store_true", help="test the broker: start, check and end a session (the default)"
    )
    parser.add_argument("--room", action="store_true", help="also join the granted room (needs --broker)")
    parser.add_argument("--config", help="config file (default: $KIOSK_CONFIG, else /etc/kiosk/kiosk.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request (never keys or tokens)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per step instead of text")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.platform and (args.broker or args.room):
        parser.error("--platform checks this machine only; leave out --broker and --room")
    report = Report(as_json=args.json)
    report.platform()
    if args.platform:
        report.end()
        return EXIT_FAILED if report.failed else 0
    path = resolve_path(args.config)
    started = time.monotonic()
    try:
        config = load_config(path)
        report.line("ok", "config", f"{path} (dialect {config.broker.dialect})", (time.monotonic() - started) * 1e3)
        asyncio.run(_run(config, join=args.room, report=report))
    except ConfigError as exc:
        print(f"kiosk: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except _StepFailed:
        pass
    report.end()
    return EXIT_FAILED if report.failed else 0
