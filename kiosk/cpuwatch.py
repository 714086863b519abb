"""Whether the kiosk is short of CPU: its cgroup's CPU quota throttles it, or its event loop runs late.

A kiosk confined to a small CPU quota (systemd's ``CPUQuota=``, a container's ``--cpus``) or sharing a Pi Zero with a
busy neighbour does not get the CPU a live call needs (about 18 % of one x86 core in a call). What it must not do then
is mistake its own starvation for broken hardware or a dead agent: a PortAudio callback that could not run for 2 s
looks exactly like a stalled device. :class:`CpuWatch` tells the rest of the daemon when that is the case, so that it
degrades instead, and says so in its log, ``kiosk status`` and metrics:

- a stalled audio stream is not judged a device failure for up to three stall timeouts
  (:mod:`kiosk.audio.supervisor`);
- the first words go as they were encoded while the session connected, or as PCM, never encoded a second time
  (:meth:`kiosk.daemon.room.AgentRoom.send_preconnect`);
- while the speaker is silent a session's microphone frames skip the WebRTC APM, handed over 90 ms at a time
  (:mod:`kiosk.audio.mic_path`).

Two signals, checked every :data:`TICK_S`:

- the throttled time of the cgroups with a CPU quota from the daemon's own up (cgroup v2 ``cpu.max`` and
  ``cpu.stat``'s ``throttled_usec``; cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` and ``cpu.stat``'s
  ``throttled_time`` in ns; see the kernel's ``Documentation/admin-guide/cgroup-v2.rst`` and
  ``Documentation/scheduler/sched-bwc.rst``). The cgroup is looked up again on every tick: a process can be moved.
- the watch's own tick arriving late by :data:`LATE_S` or more on :data:`LATE_TICKS` looks in a row (no quota needed:
  any lasting CPU shortage shows here; a single hiccup, a garbage collection or a slow page-in, does not count).

The kiosk is short from the first tick that sees either, until :data:`HOLD_S` pass without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: How often the watch looks (s).
TICK_S = 0.5
#: Throttled for this share of a tick or more: the quota, not the work, sets the pace.
THROTTLED_SHARE = 0.05
#: The tick itself this late (s): the event loop could not run for that long.
LATE_S = 0.3
#: Late looks in a row that make the kiosk short.
LATE_TICKS = 2
#: Short until this long (s) passes with neither signal.
HOLD_S = 5.0
#: cgroup v1 mount points of the ``cpu`` controller, tried in order.
V1_DIRS = ("cpu,cpuacct", "cpu", "cpuacct,cpu")


@dataclass(frozen=True, slots=True)
class CpuStatus:
    """What ``kiosk status`` and the metrics show (``short`` now; totals since the daemon started)."""

    short: bool
    #: Times the kiosk became short of CPU.
    episodes: int
    #: Seconds the kiosk's cgroup was throttled by its quota while the watch looked.
    throttled_s: float
    #: The quota in cores (0.1 = 10 % of one core), None without one.
    quota_cores: float | None
    #: The longest the watch's own tick came late (ms).
    worst_late_ms: float


@dataclass(frozen=True, slots=True)
class CgroupCpuSample:
    """One reading of the limited cgroups above the process: which ones, the tightest quota (cores) and their
    throttled time so far (s, summed)."""

    where: str
    quota_cores: float
    throttled_s: float


@dataclass(frozen=True, slots=True)
class _Mount:
    """A cgroup file system mount: where it is, and which cgroup path its root is (``/`` but in some containers)."""

    point: Path
    root: str

    def directory(self, path: str) -> Path:
        """The directory of cgroup ``path`` (as ``/proc/self/cgroup`` gives it) under this mount."""
        if self.root != "/" and (path == self.root or path.startswith(self.root + "/")):
            path = path[len(self.root) :]
        return self.point.joinpath(*[p for p in path.split("/") if p])


class CgroupCpu:
    """Reads the CPU quotas and throttled time of the limited cgroups above this process (v2 or v1).

    The cgroup file systems are found in ``/proc/self/mountinfo`` (``proc(5)``: field 4 is the mount's root, field 5
    its mount point, after ``-`` the type and the super options naming v1's controllers); where that cannot be read,
    under ``root``. Every cgroup from the process's own up to the mount's root is looked at: a slice's quota
    throttles the services in it, and shows in the slice's own ``cpu.stat``.
    """

    def __init__(self, *, proc_self: Path = Path("/proc/self"), root: Path = Path("/sys/fs/cgroup")) -> None:
        self._proc_self = proc_self
        self._root = root

    def read(self) -> CgroupCpuSample | None:
        """The limited cgroups above the process, or None when none has a quota or the files cannot be read (no
        cgroup file system, a container that hides it)."""
        try:
            lines = (self._proc_self / "cgroup").read_text().splitlines()
        except OSError:
            return None
        v2, v1 = self._mounts()
        for line in lines:
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy == "0" and controllers == "":
                found = self._walk(v2, path, _v2)
            elif "cpu" in controllers.split(","):
                found = next((s for m in v1 if (s := self._walk([m], path, _v1))), None)
            else:
                continue
            if found is not None:
                return found
        return None

    def _mounts(self) -> tuple[list[_Mount], list[_Mount]]:
        """The cgroup v2 mounts and the v1 mounts holding the ``cpu`` controller."""
        try:
            lines = (self._proc_self / "mountinfo").read_text().splitlines()
        except OSError:
            return [_Mount(self._root, "/"), _Mount(self._root / "unified", "/")], [
                _Mount(self._root / d, "/") for d in V1_DIRS
            ]
        v2, v1 = [], []
        for line in lines:
            fields = line.split(" ")
            if "-" not in fields[6:]:
                continue
            dash = fields.index("-", 6)
            kind, options = fields[dash + 1], fields[dash + 3].split(",") if len(fields) > dash + 3 else []
            mount = _Mount(Path(_unescape(fields[4])), _unescape(fields[3]))
            if kind == "cgroup2":
                v2.append(mount)
            elif kind == "cgroup" and "cpu" in options:
                v1.append(mount)
        return v2, v1

    @staticmethod
    def _walk(
        mounts: list[_Mount], path: str, read: Callable[[Path], CgroupCpuSample | None]
    ) -> CgroupCpuSample | None:
        for mount in mounts:
            own = mount.directory(path)
            if not own.is_dir():
                continue
            found = []
            directory = own
            while True:
                sample = read(directory)
                if sample is not None:
                    found.append(sample)
                if directory == mount.point or directory.parent == directory:
                    break
                directory = directory.parent
            if found:
                return CgroupCpuSample(
                    where=" ".join(s.where for s in found),
                    quota_cores=min(s.quota_cores for s in found),
                    throttled_s=sum(s.throttled_s for s in found),
                )
        return None


def _unescape(field: str) -> str:
    """A mountinfo path with its octal escapes (``\\040`` for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _stat(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _v2(directory: Path) -> CgroupCpuSample | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        throttled_us = _stat(directory / "cpu.stat").get("throttled_usec", 0)
        return CgroupCpuSample(str(directory), int(quota) / int(period), throttled_us / 1e6)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1(directory: Path) -> CgroupCpuSample | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        if quota <= 0:
            return None
        period = int((directory / "cpu.cfs_period_us").read_text())
        throttled_ns = _stat(directory / "cpu.stat").get("throttled_time", 0)
        return CgroupCpuSample(str(directory), quota / period, throttled_ns / 1e9)
    except (OSError, ValueError, ZeroDivisionError):
        return None


class CpuWatch:
    """Judges every :data:`TICK_S` whether the kiosk is short of CPU; :meth:`short` answers on the loop."""

    def __init__(
        self,
        *,
        cgroup: CgroupCpu | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = TICK_S,
    ) -> None:
        self._cgroup = cgroup or CgroupCpu()
        self._clock = clock
        self._tick_s = tick_s
        self._task: asyncio.Task[None] | None = None
        self._last: CgroupCpuSample | None = None
        self._short_since: float | None = None
        self._last_short_t: float | None = None
        self._episode_throttled_s = 0.0
        self._worst_late_s = 0.0
        self._late_ticks = 0
        self.episodes = 0
        self.throttled_s = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start looking (reads the cgroup files on the loop: in-memory, they do not block); once."""
        if self._task is not None:
            return
        self.tick(late_s=0.0)
        self._task = loop.create_task(self._run(), name="cpu-watch")

    async def stop(self) -> None:
        """Stop looking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            due = self._clock() + self._tick_s
            await asyncio.sleep(self._tick_s)
            try:
                self.tick(late_s=max(0.0, self._clock() - due))
            except Exception:
                # The watch must outlive anything a cgroup file throws at it; a look that failed changes nothing.
                log.exception("the CPU watch failed a look")

    def tick(self, *, late_s: float) -> None:
        """One look: the cgroup's throttled time since the last look, and how late this look came (s)."""
        now = self._clock()
        sample = self._cgroup.read()
        throttled = 0.0
        if sample is not None and self._last is not None and sample.where == self._last.where:
            throttled = max(0.0, sample.throttled_s - self._last.throttled_s)
        self._last = sample
        self.throttled_s += throttled
        self._worst_late_s = max(self._worst_late_s, late_s)
        self._late_ticks = self._late_ticks + 1 if late_s >= LATE_S else 0
        starved = throttled >= THROTTLED_SHARE * self._tick_s or self._late_ticks >= LATE_TICKS
        if starved:
            self._last_short_t = now
            self._episode_throttled_s += throttled
            if self._short_since is None:
                self._short_since = now
                self.episodes += 1
                quota = f"a CPU quota of {sample.quota_cores * 100:g} % of a core" if sample else "no CPU quota"
                log.warning(
                    "short of CPU (%s; throttled %.0f ms of the last %.1f s, the event loop %.0f ms late): audio may "
                    "lag; device stalls are excused, the APM rests while the speaker is silent, until it passes",
                    quota,
                    throttled * 1000,
                    self._tick_s,
                    late_s * 1000,
                )
        elif self._short_since is not None and self._last_short_t is not None and now - self._last_short_t >= HOLD_S:
            log.info(
                "enough CPU again after %.1f s short (throttled %.1f s in that time)",
                self._last_short_t - self._short_since,
                self._episode_throttled_s,
            )
            self._short_since = None
            self._episode_throttled_s = 0.0

    def short(self, within_s: float = 0.0) -> bool:
        """Whether the kiosk is short of CPU now, or was at any look in the last ``within_s`` (s)."""
        if self._short_since is not None:
            return True
        return self._last_short_t is not None and self._clock() - self._last_short_t <= within_s

    def status(self) -> CpuStatus:
        """The watch's totals and whether it is short now."""
        return CpuStatus(
            short=self._short_since is not None,
            episodes=self.episodes,
            throttled_s=round(self.throttled_s, 3),
            quota_cores=self._last.quota_cores if self._last is not None else None,
            worst_late_ms=round(self._worst_late_s * 1000, 1),
        )
