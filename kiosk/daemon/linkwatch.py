"""Fast evidence that a LiveKit room's media link is down: nothing received on its WebRTC transports.

Why: the SDK (``livekit`` 1.2) notices a total blackout only when its signal ping times out (``ping_timeout`` of the
server's ``JoinResponse``): 12-15 s after the blackout began, measured with a plain ``rtc.Room`` (issue 22). For those
seconds the kiosk would show "live" to a visitor talking into a dead link. :class:`LinkWatch` polls
``Room.get_rtc_stats()`` and reports ``down`` when nothing arrived from the server for ``silent_s`` (3 s), ``up`` when
traffic flows again.

What counts as "something arrived": any receive counter moving on any transport of either peer connection
(publisher and subscriber): ``TransportStats.bytes_received`` / ``packets_received``, and per ICE candidate pair
``CandidatePairStats.bytes_received`` / ``packets_received`` / ``requests_received`` / ``responses_received``. The
byte counters take every RTP, RTCP, DTLS and SCTP (data channel) packet; ICE (STUN) checks are counted only in
``requests_received`` / ``responses_received`` (measured: a check moves those and no byte counter). Measured with
the sandbox, gaps between arrivals on a healthy quiet link: with the agent in the room (silent) at most 0.6 s, since
its silent tracks still send RTP at 50 packets/s each (the SDK's audio source sends silence when nothing is
captured; a real agent with Opus DTX still sends a packet every 400 ms); with no agent but the kiosk's microphone
published at most 1.4 s (RTCP reports about it every 0.5-2 s, ICE checks every ~2.5 s); with nothing published and
nobody else at most 2.1 s (ICE checks alone).

When the silence began: the last arrival. For packets, ``CandidatePairStats.last_packet_received_timestamp`` (ms
since the Unix epoch, the clock of :func:`time.time`) moved onto the monotonic clock, used only when it falls between
the previous poll and this one (so a wall-clock step cannot move it further). ICE checks have no timestamp: when
only they moved, the poll that saw them dates them (at most ``interval_s`` late).

Rules (the numbers are constructor arguments):

- ``interval_s`` = 1 s between polls. One call costs ~1.1 ms of CPU here (0.3 ms of it on the event loop's thread,
  the rest in the FFI's threads; it is an async FFI request that does not block the loop): ~0.1 % of a core at 1 Hz,
  ~0.4 % on a Raspberry Pi core (3-4x slower). ``down`` comes between ``silent_s`` and ``silent_s + interval_s``
  after the last arrival: polling faster would gain less than a second on a bound the silence itself dominates.
- ``silent_s`` = 3 s: longer than a jitter-buffer stall or a Wi-Fi roam (well under 1 s) and than any gap between
  arrivals on a quiet healthy link (above), far shorter than the SDK's 12 s.
- A failed or empty stats call (``RuntimeError`` from the FFI, a call slower than ``silent_s``, no transport while
  the SDK rebuilds its peer connections) is no evidence, logged at debug: it neither proves silence nor ends it.
  Only when the room says ``CONN_CONNECTED`` and calls keep failing for ``silent_s`` does the silence count.
- ``up`` needs traffic and a room in ``CONN_CONNECTED``: after a long outage the SDK's new peer connections carry
  traffic a few ms before it reports ``reconnected`` (measured), and "up" while it still says "reconnecting" would
  contradict it.
- No call at all while the room is ``CONN_DISCONNECTED``; nothing is reported then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from livekit import rtc

logger = logging.getLogger(__name__)

DEFAULT_SILENT_S = 3.0
DEFAULT_INTERVAL_S = 1.0
_TRANSPORT_FIELDS = ("bytes_received", "packets_received")
_STUN_FIELDS = ("requests_received", "responses_received")
_PAIR_FIELDS = ("bytes_received", "packets_received", *_STUN_FIELDS)


class StatsRoom(Protocol):
    """What the watcher needs of a room: :class:`livekit.rtc.Room` has both."""

    @property
    def connection_state(self) -> rtc.ConnectionState.ValueType:
        """``CONN_CONNECTED``, ``CONN_RECONNECTING`` or ``CONN_DISCONNECTED``."""
        ...

    async def get_rtc_stats(self) -> rtc.RtcStats:
        """Publisher and subscriber WebRTC statistics; RuntimeError when the room is not connected."""
        ...


@dataclasses.dataclass(frozen=True)
class LinkSample:
    """One reading: receive counters by ``side:stats-id:field``, and the newest packet's time (s since the epoch)."""

    counters: dict[str, int]
    last_packet_wall_s: float | None


def read_sample(stats: rtc.RtcStats) -> LinkSample:
    """The receive counters of every transport and candidate pair of both peer connections in ``stats``."""
    counters: dict[str, int] = {}
    newest = 0.0
    for side, entries in (("publisher", stats.publisher_stats), ("subscriber", stats.subscriber_stats)):
        for entry in entries:
            kind = entry.WhichOneof("stats")
            if kind == "transport":
                transport = entry.transport
                for name in _TRANSPORT_FIELDS:
                    counters[f"{side}:{transport.rtc.id}:{name}"] = getattr(transport.transport, name)
            elif kind == "candidate_pair":
                pair = entry.candidate_pair
                for name in _PAIR_FIELDS:
                    counters[f"{side}:{pair.rtc.id}:{name}"] = getattr(pair.candidate_pair, name)
                newest = max(newest, pair.candidate_pair.last_packet_received_timestamp)
    return LinkSample(counters=counters, last_packet_wall_s=newest / 1000.0 if newest > 0 else None)


class LinkWatch:
    """Watches one room for link silence; calls ``on_change(down, since)`` when the verdict flips.

    ``since`` is a :func:`time.monotonic` time (or the injected ``clock``'s): for ``down`` the last arrival, i.e.
    when the silence began; for ``up`` the newest arrival at the first poll that saw traffic again. ``up`` waits
    until the room is ``CONN_CONNECTED`` again (after the SDK's ``reconnected`` when it had to resume or rejoin).
    Callbacks run on the event loop.

    Args:
        room: the room to watch (:class:`livekit.rtc.Room`, or any :class:`StatsRoom`, e.g. a test's fake).
        on_change: called with ``(True, silence_began)`` and later ``(False, traffic_again_at)``.
        silent_s: seconds without any arrival that make the link ``down`` (default 3 s; see the module docstring).
        interval_s: seconds between polls (default 1 s); must be shorter than ``silent_s``.
        clock: monotonic seconds; wall_clock: seconds since the Unix epoch (the stats' own timestamps).

    Raises:
        ValueError: a bound that is not a positive number, or ``interval_s`` not below ``silent_s``.
    """

    def __init__(
        self,
        *,
        room: StatsRoom,
        on_change: Callable[[bool, float], None],
        silent_s: float = DEFAULT_SILENT_S,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("silent_s", silent_s), ("interval_s", interval_s)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"link watch: {name} must be a positive number of seconds, got {value!r}")
        if interval_s >= silent_s:
            raise ValueError(
                f"link watch: interval_s ({interval_s} s) must be shorter than silent_s ({silent_s} s), "
                "or the silence is judged too late; poll more often or raise silent_s"
            )
        self._room = room
        self._on_change = on_change
        self._silent_s = float(silent_s)
        self._interval_s = float(interval_s)
        self._clock = clock
        self._wall_clock = wall_clock
        self._counters: dict[str, int] | None = None
        self._evidence_at: float | None = None
        self._last_arrival: float | None = None
        self._failing_since: float | None = None
        self._down = False
        self._down_since = 0.0
        self._traffic_again: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        """True from a ``down`` report until the next ``up``."""
        return self._down

    @property
    def last_arrival(self) -> float | None:
        """Monotonic time of the last arrival seen, None before the first successful poll."""
        return self._last_arrival

    def start(self) -> None:
        """Start polling on the running loop (idempotent while running)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="linkwatch")

    async def aclose(self) -> None:
        """Stop polling and wait for the poll task to end (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # the supervisor boundary of the poll task: keep watching
                logger.exception("link watch: a poll failed; polling goes on")
            await asyncio.sleep(self._interval_s)

    async def poll_once(self) -> None:
        """One poll: read the stats (bounded by ``silent_s``), update the verdict, report a change."""
        state = self._room.connection_state
        if state == rtc.ConnectionState.CONN_DISCONNECTED:
            self._failing_since = None
            return
        started = self._clock()
        sample: LinkSample | None = None
        try:
            async with asyncio.timeout(self._silent_s):
                sample = read_sample(await self._room.get_rtc_stats())
        except (RuntimeError, TimeoutError) as exc:
            logger.debug("link watch: no WebRTC stats this time: %r", exc)
        now = self._clock()
        connected = self._room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        if sample is not None and sample.counters:
            self._observe(now, self._wall_clock(), sample)
        elif connected:
            self._failing_since = started if self._failing_since is None else self._failing_since
        else:
            self._failing_since = None
        self._judge(now, connected=connected)

    def _observe(self, now: float, wall: float, sample: LinkSample) -> None:
        previous, self._counters = self._counters, sample.counters
        self._failing_since = None
        # a new peer connection (full reconnect) brings new ids or counters restarted from 0: any change counts
        moved = [k for k, v in sample.counters.items() if v > 0 and (previous is None or previous.get(k) != v)]
        window = self._silent_s if self._evidence_at is None else now - self._evidence_at
        self._evidence_at = now
        if not moved:
            return
        arrival = now
        # ICE checks have no timestamp: alone they are dated at the poll; with packets, the newest packet dates both
        packets = any(not k.endswith(_STUN_FIELDS) for k in moved)
        if packets and sample.last_packet_wall_s is not None and 0.0 <= wall - sample.last_packet_wall_s <= window:
            arrival = now - (wall - sample.last_packet_wall_s)
        if self._last_arrival is None or arrival > self._last_arrival:
            self._last_arrival = arrival
            if self._down and self._traffic_again is None:
                self._traffic_again = arrival

    def _judge(self, now: float, *, connected: bool) -> None:
        last = self._last_arrival
        if last is None:
            return
        if self._down:
            # up only once the room is connected again: while the SDK resumes or rejoins, it says so itself
            if self._traffic_again is not None and connected:
                since, silence = self._traffic_again, self._traffic_again - self._down_since
                self._flip(False, since, "link watch: traffic again after %.1f s without any", silence)
            return
        proven = self._evidence_at is not None and self._evidence_at - last >= self._silent_s
        failing = self._failing_since is not None and now - self._failing_since >= self._silent_s
        if now - last >= self._silent_s and (proven or failing):
            why = "nothing received" if proven else "WebRTC stats failing"
            self._flip(True, last, "link watch: link down, %s for %.1f s", why, now - last)

    def _flip(self, down: bool, since: float, message: str, *args: object) -> None:
        self._down = down
        self._traffic_again = None
        if down:
            self._down_since = since
        logger.info(message, *args)
        self._on_change(down, since)
