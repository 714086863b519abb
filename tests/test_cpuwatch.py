"""The CPU shortage watch (``kiosk.cpuwatch``): cgroup v1 and v2 quotas read from files laid out as the kernel does,
and the short / enough-again verdicts driven tick by tick."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kiosk.audio import AGENT, AudioEngine, AudioHealthEvent
from kiosk.audio.capture import IDLE_HAND_OFF_BLOCKS
from kiosk.audio.fake import FakeStreamFactory
from kiosk.audio.streams import DeviceInfo
from kiosk.audio.supervisor import STARVED_STALL_FACTOR
from kiosk.commands.statusview import _audio_line
from kiosk.config import AudioConfig
from kiosk.cpuwatch import HOLD_S, LATE_S, LATE_TICKS, CgroupCpu, CgroupCpuSample, CpuWatch
from tests.fixtures.engine import RAW, settle
from tests.fixtures.waiting import until


def _v2(tmp_path: Path, cgroup: str, dirs: dict[str, tuple[str, int]]) -> CgroupCpu:
    """A cgroup v2 tree: ``dirs`` maps a path to its (cpu.max, throttled_usec)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(f"0::{cgroup}\n")
    root = tmp_path / "cgroup"
    for path, (cpu_max, throttled) in dirs.items():
        d = root / path.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(cpu_max + "\n")
        (d / "cpu.stat").write_text(f"usage_usec 1000\nnr_periods 5\nnr_throttled 2\nthrottled_usec {throttled}\n")
    return CgroupCpu(proc_self=proc, root=root)


def test_v2_quota_of_the_own_cgroup(tmp_path: Path) -> None:
    """``cpu.max`` "10000 100000" is 10 % of a core; ``throttled_usec`` is read in seconds."""
    cgroup = _v2(
        tmp_path,
        "/system.slice/kiosk.service",
        {"": ("max", 0), "system.slice/kiosk.service": ("10000 100000", 250_000)},
    )
    sample = cgroup.read()
    assert sample is not None
    assert (round(sample.quota_cores, 3), sample.throttled_s) == (0.1, 0.25)
    assert sample.where.endswith("kiosk.service")


def test_v2_quota_of_a_parent_slice(tmp_path: Path) -> None:
    """No quota on the service itself, one on its slice: the slice's is the one that throttles."""
    cgroup = _v2(
        tmp_path,
        "/kiosk.slice/kiosk.service",
        {"": ("max", 0), "kiosk.slice": ("7000 100000", 1_000_000), "kiosk.slice/kiosk.service": ("max", 0)},
    )
    sample = cgroup.read()
    assert sample is not None and sample.where.endswith("kiosk.slice") and sample.throttled_s == 1.0


def test_v2_without_a_quota_and_without_files(tmp_path: Path) -> None:
    """ "max" everywhere is no quota; a missing cgroup file system is no quota either, never an error."""
    assert _v2(tmp_path, "/a/b", {"": ("max", 0), "a": ("max", 0), "a/b": ("max", 0)}).read() is None
    assert CgroupCpu(proc_self=tmp_path / "nowhere", root=tmp_path / "none").read() is None


def test_v1_cfs_quota(tmp_path: Path) -> None:
    """cgroup v1: ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``, ``throttled_time`` in ns; -1 is no quota."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text("12:memory:/bench\n4:cpu,cpuacct:/bench\n0::/\n")
    d = tmp_path / "cgroup" / "cpu,cpuacct" / "bench"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("7000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    (d / "cpu.stat").write_text("nr_periods 30\nnr_throttled 20\nthrottled_time 1500000000\n")
    root = tmp_path / "cgroup" / "cpu,cpuacct"
    (root / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "cpu.cfs_period_us").write_text("100000\n")
    sample = CgroupCpu(proc_self=proc, root=tmp_path / "cgroup").read()
    assert sample is not None
    assert (round(sample.quota_cores, 3), sample.throttled_s) == (0.07, 1.5)
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    assert CgroupCpu(proc_self=proc, root=tmp_path / "cgroup").read() is None


def test_mountinfo_finds_a_containers_cgroup_and_the_tightest_quota_above_it(tmp_path: Path) -> None:
    """cgroup v2 mounted with a root of ``/lxc/c1`` (a container without its own cgroup namespace): the path
    ``/proc/self/cgroup`` gives is taken relative to that root. The service's own 50 % and its slice's 10 % both
    count: the tightest quota, and the throttled time of both."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text("0::/lxc/c1/kiosk.slice/kiosk.service\n")
    point = tmp_path / "mnt" / "cgroup"
    (proc / "mountinfo").write_text(
        f"22 1 8:1 / / rw,relatime - ext4 /dev/root rw\n30 22 0:26 /lxc/c1 {point} rw,nosuid shared:9 - cgroup2 cgroup2 rw\n"
    )
    for path, cpu_max, throttled in (
        ("", "max", 0),
        ("kiosk.slice", "10000 100000", 2_000_000),
        ("kiosk.slice/kiosk.service", "50000 100000", 100_000),
    ):
        d = point / path
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(cpu_max + "\n")
        (d / "cpu.stat").write_text(f"usage_usec 1\nthrottled_usec {throttled}\n")
    sample = CgroupCpu(proc_self=proc, root=tmp_path / "elsewhere").read()
    assert sample is not None
    assert (round(sample.quota_cores, 3), sample.throttled_s) == (0.1, 2.1)


def test_mountinfo_finds_a_v1_cpu_hierarchy_with_a_space_in_its_path(tmp_path: Path) -> None:
    """cgroup v1: the mount whose super options name ``cpu``, its mount point unescaped (``\\040`` is a space)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text("5:memory:/k\n4:cpu,cpuacct:/k\n")
    point = tmp_path / "cg root" / "cpu,cpuacct"
    escaped = str(point).replace(" ", "\\040")
    (proc / "mountinfo").write_text(
        f"40 30 0:35 / {tmp_path}/mem rw - cgroup cgroup rw,memory\n41 30 0:36 / {escaped} rw - cgroup cgroup rw,cpu,cpuacct\n"
    )
    d = point / "k"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("15000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    (d / "cpu.stat").write_text("nr_periods 3\nnr_throttled 1\nthrottled_time 20000000\n")
    sample = CgroupCpu(proc_self=proc, root=tmp_path / "elsewhere").read()
    assert sample is not None and (round(sample.quota_cores, 3), sample.throttled_s) == (0.15, 0.02)


class Throttle:
    """A cgroup whose throttled time the test moves."""

    def __init__(self) -> None:
        self.throttled_s = 0.0
        self.where = "/sys/fs/cgroup/kiosk"

    def read(self) -> CgroupCpuSample:
        return CgroupCpuSample(self.where, 0.1, self.throttled_s)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_throttling_makes_the_kiosk_short_until_it_passes(caplog: pytest.LogCaptureFixture) -> None:
    """Throttled in a tick: short (one warning naming the quota); enough again only after ``HOLD_S`` without."""
    caplog.set_level(logging.INFO, logger="kiosk.cpuwatch")
    cgroup, clock = Throttle(), Clock()
    watch = CpuWatch(cgroup=cgroup, clock=clock)  # type: ignore[arg-type]
    watch.tick(late_s=0.0)
    clock.t += 0.5
    watch.tick(late_s=0.0)
    assert not watch.short() and watch.status().episodes == 0
    cgroup.throttled_s += 0.2
    clock.t += 0.5
    watch.tick(late_s=0.0)
    assert watch.short() and watch.status().short
    assert "short of CPU (a CPU quota of 10 % of a core; throttled 200 ms" in caplog.text
    for _ in range(int(HOLD_S / 0.5) - 1):
        clock.t += 0.5
        watch.tick(late_s=0.0)
        assert watch.short(), "short until HOLD_S pass without throttling"
    clock.t += 0.5
    watch.tick(late_s=0.0)
    assert not watch.short()
    assert watch.short(within_s=HOLD_S + 1.0), "it was short within that time"
    assert not watch.short(within_s=HOLD_S - 1.0)
    status = watch.status()
    assert (status.episodes, status.throttled_s, status.quota_cores) == (1, 0.2, 0.1)
    assert "enough CPU again after" in caplog.text


def test_a_late_loop_is_short_without_a_quota() -> None:
    """No cgroup quota: ``LATE_TICKS`` looks in a row ``LATE_S`` late are enough; a little lateness, or one late look
    (a hiccup), is not."""

    class NoQuota:
        def read(self) -> None:
            return None

    clock = Clock()
    watch = CpuWatch(cgroup=NoQuota(), clock=clock)  # type: ignore[arg-type]
    watch.tick(late_s=LATE_S / 3)
    watch.tick(late_s=LATE_S)
    watch.tick(late_s=0.0)
    assert not watch.short()
    for _ in range(LATE_TICKS):
        watch.tick(late_s=LATE_S)
    assert watch.short() and watch.status().quota_cores is None and watch.status().worst_late_ms == LATE_S * 1000


def test_moving_to_another_cgroup_is_not_throttling() -> None:
    """A process moved into a cgroup whose counter is already high: the first reading there is a baseline."""
    cgroup, clock = Throttle(), Clock()
    watch = CpuWatch(cgroup=cgroup, clock=clock)  # type: ignore[arg-type]
    watch.tick(late_s=0.0)
    cgroup.where, cgroup.throttled_s = "/sys/fs/cgroup/other", 50.0
    watch.tick(late_s=0.0)
    assert not watch.short() and watch.status().throttled_s == 0.0


class ShortWatch(CpuWatch):
    """A watch the test sets short or not."""

    def __init__(self) -> None:
        super().__init__(cgroup=CgroupCpu(proc_self=Path("/nonexistent"), root=Path("/nonexistent")))
        self.starved = True

    def short(self, within_s: float = 0.0) -> bool:
        return self.starved


async def test_a_stall_while_short_of_cpu_is_excused_for_three_stall_timeouts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A microphone silent while the kiosk is short of CPU stays open at first (the supervisor says why, once); a
    device that stays silent for ``STARVED_STALL_FACTOR`` stall timeouts is failed and reopened all the same."""
    caplog.set_level(logging.INFO, logger="kiosk.audio.supervisor")
    devices = (DeviceInfo(0, "Mic 48k", "ALSA", 1, 0, 48_000.0), DeviceInfo(1, "Speaker", "ALSA", 0, 2, 48_000.0))
    factory = FakeStreamFactory(devices=devices)
    config = AudioConfig(stall_timeout_s=0.2, reopen_backoff_max_s=0.1, **RAW)
    engine = AudioEngine(audio=config, stream_factory=factory, cpu_watch=ShortWatch())
    health: list[AudioHealthEvent] = []
    engine.subscribe_health(health.append)
    await engine.start()
    mic = factory.latest("input")
    mic.feed(np.zeros((4800, 1), dtype=np.int16))  # it ran, then went quiet
    await until(lambda: engine.health().input.blocks > 0, 5, "the first blocks", step=0.005)
    quiet_from = time.monotonic()
    told = "input: no audio for 0.2 s while the kiosk is short of CPU; not judged a device failure before 0.6 s"
    await until(lambda: told in caplog.text, 10, "the supervisor to see the stall", step=0.005)
    assert not health and factory.latest("input") is mic, "a starved kiosk's silent stream is not failed at once"
    await until(lambda: any(not e.ok and e.direction == "input" for e in health), 10, "the input to fail", step=0.005)
    assert time.monotonic() - quiet_from >= STARVED_STALL_FACTOR * 0.2, "excused for three stall timeouts"
    assert caplog.text.count(told) == 1, "said once per stall, though the supervisor looked every 50 ms"
    assert "no audio" in (engine.health().input.last_error or "")
    await engine.close()


def test_status_line_says_short_of_cpu() -> None:
    """``kiosk status`` names the shortage and the quota."""
    audio = {"cpu": {"short": True, "episodes": 2, "throttled_s": 12.5, "quota_cores": 0.1, "worst_late_ms": 800.0}}
    assert "SHORT OF CPU now (2 times, throttled 12.5 s, quota 10 % of a core)" in _audio_line(audio)
    audio["cpu"] = {"short": False, "episodes": 0, "throttled_s": 0.0, "quota_cores": None, "worst_late_ms": 1.0}
    assert "CPU" not in _audio_line(audio)


_CHILD = """
import asyncio, json, sys, time
from kiosk.cpuwatch import CpuWatch

async def main():
    watch = CpuWatch()
    watch.start(asyncio.get_running_loop())
    print("READY", flush=True)
    sys.stdin.readline()  # moved into the cgroup now
    for _ in range(400):  # at most 400 looks' worth of busy work
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            pass
        await asyncio.sleep(0)
        if watch.status().short and watch.status().throttled_s > 0:
            break
    s = watch.status()
    print(json.dumps({"short": s.short, "quota": s.quota_cores, "throttled": s.throttled_s}), flush=True)
    await watch.stop()

asyncio.run(main())
"""


def test_a_real_cgroup_quota_is_seen_as_short_of_cpu(tmp_path: Path) -> None:
    """A busy process moved into a real CPU cgroup (v2 ``cpu.max`` or v1 CFS quota) of 10 % of a core reads that
    quota from the kernel's files and calls itself short of CPU."""
    from bench.budget import cgroup_kind, cpu_quota

    if cgroup_kind() is None:
        pytest.skip("no writable CPU cgroup here (cgroup v2 cpu controller or v1 cpu hierarchy)")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        with cpu_quota(10.0, f"kiosk-test-{os.getpid()}") as procs:
            procs.write_text(str(child.pid))
            child.stdin.write("go\n")
            child.stdin.flush()
            line = child.stdout.readline()
            child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    result = json.loads(line)
    assert result["short"], result
    assert result["quota"] == pytest.approx(0.1), result
    assert result["throttled"] > 0, result


async def test_short_of_cpu_with_a_silent_speaker_a_session_skips_the_apm() -> None:
    """Short of CPU, a session's microphone frames skip the APM while the speaker is silent (nothing to cancel) and
    still reach the session; the agent's first sound brings the APM and the reverse stream back with equal counts;
    once the shortage passes, every frame is processed again."""
    from tests.test_audio_engine import MONO48, CountingProcessor

    class SpanProcessor(CountingProcessor):
        """Records each span's make-up: how unequal the last span's two counts were."""

        def __init__(self) -> None:
            super().__init__()
            self.lags: list[int] = []

        def new_span(self, lag: int) -> None:
            self.lags.append(lag)

    factory = FakeStreamFactory(devices=MONO48)
    processor = SpanProcessor()
    watch = ShortWatch()
    engine = AudioEngine(
        audio=AudioConfig(output_volume=1.0, **RAW), stream_factory=factory, processor=processor, cpu_watch=watch
    )
    await engine.start()
    mic, speaker = factory.latest("input"), factory.latest("output")
    capture = engine.start_capture()
    for _ in range(IDLE_HAND_OFF_BLOCKS * 2):  # lean: hand-offs as large as idle ones
        mic.feed(np.ones(480, dtype=np.int16))
        speaker.pull(1)
    await until(lambda: engine.health().lean_frames == 18, 2, "18 lean frames", step=0.005)
    assert processor.processed == 0 and processor.reversed == [], "no APM call while lean"
    assert len(capture.take_preconnect().pcm) == 18 * 480 * 2, "the frames still reach the session"
    tone = (np.sin(np.arange(4800) / 5) * 10_000).astype(np.int16)
    engine.mixer_input(AGENT).push(tone)
    played = []
    for _ in range(20):
        mic.feed(np.ones(480, dtype=np.int16))
        played.append(speaker.pull(1))
        await settle()
    heard = np.concatenate(played).reshape(-1)
    assert np.array_equal(heard[heard != 0], tone[tone != 0]), "the agent's audio plays whole and in order"
    await until(lambda: processor.processed >= 9, 2, "the APM back for the agent's audio", step=0.005)
    assert abs(processor.processed - len(processor.reversed)) <= 3, "both streams fed again"
    assert processor.lags and all(abs(lag) <= 3 for lag in processor.lags), f"spans made even by {processor.lags}"
    lean_before = engine.health().lean_frames
    watch.starved = False
    for _ in range(30):  # the agent's echo tail passes: still processed, the kiosk is not short any more
        mic.feed(np.ones(480, dtype=np.int16))
        speaker.pull(1)
        await settle()
    assert engine.health().lean_frames == lean_before
    capture.close()
    await engine.close()
