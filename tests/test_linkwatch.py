"""LinkWatch: link silence from WebRTC stats, with fed stats and through the real SDK on a link that blacks out."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc

from kiosk.daemon.linkwatch import LinkWatch, read_sample
from tests.fixtures.netlink import NetLink
from tests.fixtures.sandbox import SandboxHandle

_State = rtc.ConnectionState
EPOCH = 1_800_000_000.0  # the fake wall clock's offset from the fake monotonic clock


# ---- unit tests: fed stats, injected clocks ------------------------------------------------------------------------


def pair(pc_id: str, received: int, last_packet_s: float | None = None, *, responses: int = 0) -> rtc.stats.RtcStats:
    """A candidate-pair entry with ``received`` bytes and the last packet at fake wall time ``last_packet_s``."""
    stats = rtc.stats.CandidatePairStats(
        bytes_received=received,
        packets_received=received // 100,
        responses_received=responses,
        last_packet_received_timestamp=(EPOCH + last_packet_s) * 1000 if last_packet_s is not None else 0.0,
    )
    return rtc.stats.RtcStats(
        candidate_pair=rtc.stats.RtcStats.CandidatePair(rtc=rtc.stats.RtcStatsData(id=pc_id), candidate_pair=stats)
    )


def transport(pc_id: str, received: int) -> rtc.stats.RtcStats:
    """A transport entry with ``received`` bytes."""
    stats = rtc.stats.TransportStats(bytes_received=received, packets_received=received // 100)
    return rtc.stats.RtcStats(
        transport=rtc.stats.RtcStats.Transport(rtc=rtc.stats.RtcStatsData(id=pc_id), transport=stats)
    )


def report(received: int, last_packet_s: float | None = None, *, pc: str = "1") -> rtc.RtcStats:
    """Stats of both peer connections: the subscriber got ``received`` bytes, the publisher a fixed few."""
    return rtc.RtcStats(
        publisher_stats=[transport(f"T{pc}", 900), pair(f"CP{pc}", 900)],
        subscriber_stats=[transport(f"T{pc}", received), pair(f"CP{pc}", received, last_packet_s)],
    )


class FakeRoom:
    """A :class:`StatsRoom` whose next stats (or exception) the test sets; counts the calls."""

    def __init__(self) -> None:
        self.connection_state: rtc.ConnectionState.ValueType = _State.CONN_CONNECTED
        self.next: rtc.RtcStats | Exception = rtc.RtcStats(publisher_stats=[], subscriber_stats=[])
        self.calls = 0
        self.called = asyncio.Event()

    async def get_rtc_stats(self) -> rtc.RtcStats:
        """The stats set by the test, or its exception raised."""
        self.calls += 1
        self.called.set()
        if isinstance(self.next, Exception):
            raise self.next
        return self.next


class Rig:
    """A watcher on a :class:`FakeRoom` with a hand-driven clock, and the changes it reported."""

    def __init__(self, silent_s: float = 3.0, interval_s: float = 1.0) -> None:
        self.now = 100.0
        self.room = FakeRoom()
        self.changes: list[tuple[bool, float, float]] = []  # (down, since, reported at)
        self.watch = LinkWatch(
            room=self.room,
            on_change=lambda down, since: self.changes.append((down, since, self.now)),
            silent_s=silent_s,
            interval_s=interval_s,
            clock=lambda: self.now,
            wall_clock=lambda: EPOCH + self.now,
        )

    async def poll(self, stats: rtc.RtcStats | Exception | None = None, *, after: float = 1.0) -> None:
        """Advance the clock by ``after`` s, set the stats (if given) and poll once."""
        self.now = round(self.now + after, 6)
        if stats is not None:
            self.room.next = stats
        await self.watch.poll_once()

    async def flowing(self, seconds: int, received: int = 1000) -> int:
        """Poll once a second with traffic each time (last packet 20 ms before the poll); returns the byte count."""
        for _ in range(seconds):
            received += 1300
            await self.poll(report(received, self.now + 1.0 - 0.02))
        return received


def test_read_sample_takes_both_peer_connections() -> None:
    """Counters of the publisher's and subscriber's transports and pairs are read; the newest packet time too."""
    sample = read_sample(report(5000, 12.5))
    assert sample.counters["subscriber:T1:bytes_received"] == 5000
    assert sample.counters["publisher:CP1:bytes_received"] == 900
    assert sample.last_packet_wall_s == pytest.approx(EPOCH + 12.5)


async def test_steady_traffic_keeps_the_link_up() -> None:
    """A minute of polls that each see new bytes reports nothing."""
    rig = Rig()
    await rig.flowing(60)
    assert rig.changes == [] and not rig.watch.down


async def test_silence_is_reported_down_from_the_last_packet() -> None:
    """Counters frozen after the last packet: down at the first poll silent_s after it, since = that packet's time."""
    rig = Rig()
    received = await rig.flowing(5)  # polls at 101..105, last packet at 104.98
    for _ in range(2):
        await rig.poll(report(received, 104.98))
    assert rig.changes == []  # 107 - 104.98 < 3 s
    await rig.poll()
    assert rig.changes == [(True, pytest.approx(104.98), 108.0)]
    assert rig.watch.down


async def test_traffic_again_is_reported_up() -> None:
    """After a down, the first poll with new bytes reports up, since = the new packet's time."""
    rig = Rig()
    received = await rig.flowing(3)
    for _ in range(5):
        await rig.poll(report(received, 102.98))
    await rig.poll(report(received + 500, rig.now + 0.7))
    assert [(down, since) for down, since, _ in rig.changes] == [
        (True, pytest.approx(102.98)),
        (False, pytest.approx(108.7)),
    ]
    assert not rig.watch.down


async def test_a_roam_gap_shorter_than_silent_s_is_no_alarm() -> None:
    """2.5 s without a packet (a Wi-Fi roam, a jitter-buffer stall) and traffic again: nothing reported."""
    rig = Rig(silent_s=3.0, interval_s=0.5)
    received = await rig.flowing(4)
    for _ in range(5):
        await rig.poll(report(received, rig.now - 0.98 + 0.02), after=0.5)
    await rig.poll(report(received + 100, rig.now + 0.5), after=0.5)
    assert rig.changes == []


async def test_a_stun_response_alone_counts_as_an_arrival() -> None:
    """An ICE check response (no media, no newer packet timestamp) ends a silence: dated at the poll."""
    rig = Rig()
    await rig.poll(report(1000, 100.5))
    quiet = report(1000, 100.5)
    for _ in range(4):
        await rig.poll(quiet)
    sub = [transport("T1", 1000), pair("CP1", 1000, 100.5, responses=1)]
    await rig.poll(rtc.RtcStats(publisher_stats=list(quiet.publisher_stats), subscriber_stats=sub))
    assert [(down, since) for down, since, _ in rig.changes] == [(True, pytest.approx(100.5)), (False, 106.0)]


async def test_packets_with_a_stun_response_are_dated_by_the_newest_packet() -> None:
    """An ICE check response arriving with media: the newest packet's timestamp dates the arrival, not the poll."""
    rig = Rig()
    await rig.poll(report(1000, 100.5))
    publisher = list(report(1000).publisher_stats)
    sub = [transport("T1", 2000), pair("CP1", 2000, 101.6, responses=1)]
    await rig.poll(rtc.RtcStats(publisher_stats=publisher, subscriber_stats=sub))
    assert rig.watch.last_arrival == pytest.approx(101.6)


async def test_a_wall_clock_step_cannot_move_the_arrival() -> None:
    """A packet timestamp outside the last poll period (the wall clock stepped) is ignored: the poll's time counts."""
    rig = Rig()
    await rig.flowing(2)
    rig.room.next = report(9000, -3600.0)  # an hour "ago": NTP stepped the clock forward since
    await rig.poll()
    assert rig.watch.last_arrival == rig.now


async def test_failed_calls_while_reconnecting_prove_nothing() -> None:
    """The SDK is reconnecting and stats fail or come empty for 20 s: no down (no evidence is not silence)."""
    rig = Rig()
    await rig.flowing(3)
    rig.room.connection_state = _State.CONN_RECONNECTING
    for i in range(20):
        next_stats: Any = (
            RuntimeError("engine busy") if i % 2 else rtc.RtcStats(publisher_stats=[], subscriber_stats=[])
        )
        await rig.poll(next_stats)
    assert rig.changes == []


async def test_calls_failing_while_connected_count_as_silence() -> None:
    """Connected, but every stats call fails: after silent_s of failures the link is down from its last arrival."""
    rig = Rig()
    await rig.flowing(3)  # last packet at 102.98
    for _ in range(3):
        await rig.poll(RuntimeError("stats failed"))
    assert rig.changes == []  # failing since 104 only: 3 s at 107
    await rig.poll()
    assert rig.changes == [(True, pytest.approx(102.98), 107.0)]


async def test_a_new_peer_connection_ends_the_silence() -> None:
    """A full reconnect's new peer connections restart their counters low: traffic, reported up once connected."""
    rig = Rig()
    received = await rig.flowing(3)
    for _ in range(4):
        await rig.poll(report(received, 102.98))
    assert rig.watch.down
    rig.room.connection_state = _State.CONN_RECONNECTING
    await rig.poll(rtc.RtcStats(publisher_stats=[], subscriber_stats=[]))  # the old ones are gone
    await rig.poll(report(1300, rig.now + 0.9, pc="1"))  # same ids, counters from 0, the SDK still reconnecting
    assert [down for down, _, _ in rig.changes] == [True]
    rig.room.connection_state = _State.CONN_CONNECTED
    await rig.poll(report(2600, rig.now + 0.9, pc="1"))
    assert [(down, since) for down, since, _ in rig.changes[1:]] == [(False, pytest.approx(rig.now - 1.1))]


async def test_a_disconnected_room_is_not_polled() -> None:
    """While the room is disconnected no stats call is made and nothing is reported."""
    rig = Rig()
    rig.room.connection_state = _State.CONN_DISCONNECTED
    for _ in range(10):
        await rig.poll()
    assert rig.room.calls == 0 and rig.changes == []


async def test_a_hung_stats_call_is_bounded() -> None:
    """A stats call that never answers is abandoned after silent_s and counts as a failure."""

    class HangingRoom(FakeRoom):
        async def get_rtc_stats(self) -> rtc.RtcStats:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    watch = LinkWatch(room=HangingRoom(), on_change=lambda *_: None, silent_s=0.05, interval_s=0.01)
    async with asyncio.timeout(5):
        await watch.poll_once()
    assert watch.last_arrival is None


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"silent_s": 0}, "silent_s must be a positive number"),
        ({"interval_s": float("nan")}, "interval_s must be a positive number"),
        ({"silent_s": 2.0, "interval_s": 2.0}, "interval_s (2.0 s) must be shorter than silent_s (2.0 s)"),
    ],
)
def test_bad_bounds_are_named(kwargs: dict[str, float], words: str) -> None:
    """A bound that cannot work raises ValueError naming it."""
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        LinkWatch(room=FakeRoom(), on_change=lambda *_: None, **kwargs)


async def test_the_poll_task_survives_a_failing_callback(caplog: pytest.LogCaptureFixture) -> None:
    """start() polls on the loop; a callback that raises is logged and polling goes on; aclose() stops it."""
    room = FakeRoom()
    room.next = report(1000)

    def explode(_down: bool, _since: float) -> None:
        raise RuntimeError("observer bug")

    watch = LinkWatch(room=room, on_change=explode, silent_s=0.05, interval_s=0.01)
    watch.start()
    async with asyncio.timeout(10):
        while room.calls < 20:  # counters frozen: down at once, the callback raises, polls go on
            room.called.clear()
            await room.called.wait()
    await watch.aclose()
    calls = room.calls
    await asyncio.sleep(0.05)
    assert room.calls == calls
    assert "polling goes on" in caplog.text


# ---- through the real SDK and a real link --------------------------------------------------------------------------

CLIENT = Path(__file__).parent / "fixtures" / "linkwatch_client.py"
SILENT_S = 3.0
INTERVAL_S = 1.0
QUIET_S = 15.0
AGENT = "sandbox-agent"


class Child:
    """The watcher's process in the namespace and the JSON events it printed."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], within: float) -> dict[str, Any]:
        """The first event (seen before or now) for which ``predicate`` holds, within ``within`` s."""
        for event in self.events:
            if predicate(event):
                return event
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if event is None:
                raise AssertionError(f"the watcher process ended ({self.process.poll()}); events: {self.events}")
            self.events.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"not seen within {within} s; events: {self.events}")

    def named(self, name: str) -> list[dict[str, Any]]:
        """The events called ``name`` seen so far."""
        return [event for event in self.events if event["event"] == name]

    def wait_agent_quiet(self) -> dict[str, Any]:
        """Wait until the agent greeted and went back to listening (from then on both sides are silent)."""
        spoke = self.wait(lambda e: e["event"] == "agent_state" and e["state"] == "speaking", within=40)
        return self.wait(
            lambda e: e["event"] == "agent_state" and e["state"] == "listening" and e["t"] > spoke["t"], within=30
        )


@pytest.fixture
def watched(net_link: NetLink, sandbox: SandboxHandle, tmp_path: Path) -> Iterator[Child]:
    """The watcher client in the namespace, joined to a fresh room of the sandbox with its scripted agent."""
    net_link.forward_loopback(int(sandbox.http_url.rsplit(":", 1)[1]))
    room = f"linkwatch-{secrets.token_hex(4)}"
    env = {**os.environ, "LINKWATCH_TOKEN": sandbox.mint_token("kiosk", room, agent_name=AGENT)}
    argv = [sys.executable, str(CLIENT), sandbox.ws_url, str(SILENT_S), str(INTERVAL_S)]
    with (tmp_path / "client.log").open("w") as log:
        process = net_link.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    child = Child(process)
    try:
        yield child
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            logging.getLogger(__name__).warning("the watcher process did not leave in time; the fixture stops it")


@pytest.mark.slow
def test_a_blackout_is_reported_long_before_the_sdk_notices(net_link: NetLink, watched: Child) -> None:
    """Link blacked out mid-call: down within silent_s + 2 polls, before the SDK's reconnecting; up once it is back."""
    watched.wait_agent_quiet()
    watched.wait(lambda e: e["event"] == "tick" and e["last_arrival"] is not None, within=10)
    began = time.monotonic()
    net_link.blackout(True)
    applied = time.monotonic()
    try:
        down = watched.wait(lambda e: e["event"] == "down", within=30)
        reconnecting = watched.wait(lambda e: e["event"] == "reconnecting", within=40)
    finally:
        net_link.blackout(False)
    back = time.monotonic()
    up = watched.wait(lambda e: e["event"] == "up", within=60)
    logging.getLogger(__name__).info(
        "blackout at 0 (applied at +%.3f s): down reported at +%.2f s (since %+.2f s), SDK reconnecting at +%.2f s, "
        "link back at +%.2f s, up at +%.2f s; events %s",
        applied - began,
        down["t"] - began,
        down["since"] - began,
        reconnecting["t"] - began,
        back - began,
        up["t"] - began,
        [(e["event"], e.get("state"), round(e["t"] - began, 2)) for e in watched.events if e["event"] != "tick"],
    )
    assert began - INTERVAL_S <= down["since"] <= applied + 0.5, "the silence began with the blackout"
    assert down["t"] - down["since"] >= SILENT_S, "down only after silent_s of silence"
    assert down["t"] <= applied + SILENT_S + 2 * INTERVAL_S
    assert down["t"] < reconnecting["t"], "the watcher reports before the SDK notices"
    assert up["since"] >= back and up["t"] >= back
    watched.wait(lambda e: e["event"] == "reconnected", within=30)
    connected = [e["t"] for e in watched.named("connection_state") if e["state"] == "CONN_CONNECTED"]
    assert connected and up["t"] >= connected[-1] >= reconnecting["t"], "up only once the SDK says connected again"
    assert len(watched.named("down")) == 1


@pytest.mark.slow
def test_a_quiet_healthy_call_raises_no_alarm(watched: Child) -> None:
    """Agent and visitor both silent for 15 s on a healthy link: no down, and the watcher keeps seeing arrivals."""
    quiet = watched.wait_agent_quiet()
    watched.wait(lambda e: e["event"] == "tick" and e["t"] >= quiet["t"] + QUIET_S, within=QUIET_S + 30)
    ticks = [e for e in watched.events if e["event"] == "tick" and e["t"] >= quiet["t"]]
    gaps = [e["t"] - e["last_arrival"] for e in ticks]
    assert watched.named("down") == [] and watched.named("reconnecting") == []
    assert len(ticks) >= 10 and max(gaps) < SILENT_S, gaps
