"""The CPU budget as a slope: whole sessions with the daemon confined to a CPU quota, at 15, 10 and 7 % of one core.

The daemon (``python -m kiosk run`` on the private PulseAudio, :mod:`bench.daemon`) starts unconfined; once it is
idle its process is moved into a CPU cgroup (cgroup v2 ``cpu.max`` where the unified hierarchy has the ``cpu``
controller, else cgroup v1 ``cpu.cfs_quota_us``) whose quota is the share of one core under test. Then, per quota:
a press, the visitor speaking from the press (the bench's speech clip), the agent's answer, and the session left to
end by silence. Each round reports press-to-live, how much of the visitor's first :data:`FIRST_S` seconds the
agent received (by alignment, :func:`bench.firstwords.kept_fraction`), and how the session ended. The baseline is
the same round with the daemon unconfined, in the same run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import Figure, Samples, Sandbox, rounded, stop, write_wav
from bench.daemon import Daemon, daemon
from bench.firstwords import kept_fraction
from bench.presslive import _parts, _to16
from bench.pulse import PulseAudio

#: Shares of one core under test (%); ``None`` is the unconfined baseline.
QUOTAS_PCT: tuple[float | None, ...] = (None, 15.0, 10.0, 7.0)
#: The visitor's first seconds whose arrival at the agent is scored (s).
FIRST_S = 3.0
#: The daemon's silence timeout in these rounds (s): the session ends by itself after the agent's answer.
SILENCE_S = 4.0
#: How long a round may take to go live, and to end (s).
LIVE_WITHIN_S = 40.0
END_WITHIN_S = 90.0
#: Microphone blocks (10 ms) delivered before the press: the default pre-roll (1.5 s) is full.
PRE_ROLL_BLOCKS = 150
#: How often the round asks the daemon for its status (s).
POLL_S = 0.5
PERIOD_US = 100_000
V1_CPU = Path("/sys/fs/cgroup/cpu")
V2_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


@dataclasses.dataclass
class Round:
    """One session at one quota."""

    quota_pct: float | None
    press_to_live_ms: float | None = None
    first_words_kept: float | None = None
    end_reason: str | None = None
    failure: str | None = None
    throttled_s: float | None = None
    preconnect_s: float | None = None
    preconnect_rejected: str = ""
    problem: str = ""


def cgroup_kind() -> str | None:
    """``"v2"``, ``"v1"`` or None: which CPU cgroup this machine lets the bench create."""
    for root in V2_ROOTS:
        controllers = root / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split() and os.access(root, os.W_OK):
            return "v2"
    if (V1_CPU / "cpu.cfs_quota_us").exists() and os.access(V1_CPU, os.W_OK):
        return "v1"
    return None


@contextlib.contextmanager
def cpu_quota(percent: float, name: str) -> Iterator[Path]:
    """A CPU cgroup limited to ``percent`` % of one core for the block; yields its ``cgroup.procs`` (write a pid
    there to confine that process). Removed afterwards (its processes must have exited).

    Raises:
        RuntimeError: no CPU cgroup can be created here.
    """
    kind = cgroup_kind()
    if kind is None:
        raise RuntimeError("no writable CPU cgroup (v2 cpu controller or v1 cpu hierarchy) on this machine")
    quota_us = max(1000, round(PERIOD_US * percent / 100))
    if kind == "v2":
        root = next(r for r in V2_ROOTS if (r / "cgroup.controllers").exists())
        with contextlib.suppress(OSError):
            (root / "cgroup.subtree_control").write_text("+cpu")
        group = root / name
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
    else:
        group = V1_CPU / name
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota_us))
    try:
        yield group / "cgroup.procs"
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def throttled_s(procs: Path) -> float | None:
    """Seconds the group's processes were held back by the quota so far (``cpu.stat``), when the kernel says."""
    stat = procs.parent / "cpu.stat"
    if not stat.exists():
        return None
    fields = dict(line.split() for line in stat.read_text().splitlines() if len(line.split()) == 2)
    if "throttled_usec" in fields:
        return int(fields["throttled_usec"]) / 1e6
    if "throttled_time" in fields:
        return int(fields["throttled_time"]) / 1e9
    return None


def _settled(d: Daemon) -> None:
    """Wait until the microphone has delivered a full pre-roll: a visitor meets a kiosk that has been idle a while."""
    deadline = time.monotonic() + LIVE_WITHIN_S
    while (d.ask("status")["audio"]["input"].get("blocks") or 0) < PRE_ROLL_BLOCKS:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the microphone did not deliver {PRE_ROLL_BLOCKS} blocks")
        time.sleep(POLL_S)


def _session(d: Daemon, sb: Sandbox, pulse: PulseAudio, wav: Path, first16: Samples, number: int, out: Round) -> None:
    """One pressed session with the visitor speaking from the press, left to end by silence; scored into ``out``."""
    d.ask("press")
    player = pulse.play(wav, latency_ms=20)
    try:
        # polled slowly: each answer costs the confined daemon CPU of its quota
        status = d.wait_state("live", within=LIVE_WITHIN_S, step=POLL_S)
        room = str(status["session"]["room"])
        player.wait(timeout=60)
    finally:
        stop(player, 5)
    status = d.wait_state("idle", within=END_WITHIN_S, sessions=number, step=POLL_S)
    recent = (status.get("recent") or [{}])[0]
    out.end_reason, out.failure = recent.get("end_reason"), recent.get("failure")
    out.press_to_live_ms = recent.get("press_to_live_ms")
    sb.wait_session(room, lambda r: r["ended_at"] is not None and bool(r["heard"]["live_wav_path"]), 30.0)
    time.sleep(0.3)  # the agent rewrites its files as it leaves
    record = sb.session(room) or {}
    heard = record.get("heard", {})
    out.preconnect_s = heard.get("preconnect_seconds")
    out.preconnect_rejected = str(heard.get("preconnect_rejected") or "")
    parts = _parts(record)
    out.first_words_kept = round(kept_fraction(first16, parts)[0], 3) if parts else 0.0


def run(
    *,
    sb: Sandbox,
    pulse: PulseAudio,
    workdir: Path,
    speech48: Samples,
    quotas: tuple[float | None, ...] = QUOTAS_PCT,
) -> dict[str, Any]:
    """One round per quota of ``quotas`` (None: unconfined); the raw results."""
    wav = write_wav(workdir / "visitor.wav", speech48)
    first16 = _to16(speech48)[: int(FIRST_S * 16000)]
    rounds: list[dict[str, Any]] = []
    kind = cgroup_kind()
    for number, quota in enumerate(quotas):
        result = Round(quota_pct=quota)
        if quota is not None and kind is None:
            result.problem = "no writable CPU cgroup on this machine"
            rounds.append(dataclasses.asdict(result))
            continue
        name = f"kiosk-bench-{os.getpid()}-{number}"
        with daemon(
            sb=sb,
            pulse=pulse,
            workdir=workdir / f"budget-{number}",
            silence_s=SILENCE_S,
            voice_wake=False,
            log_level="info",
        ) as d:
            try:
                _settled(d)
                if quota is None:
                    _session(d, sb, pulse, wav, first16, 1, result)
                else:
                    with cpu_quota(quota, name) as procs:
                        procs.write_text(str(d.pid))
                        before = throttled_s(procs)
                        try:
                            _session(d, sb, pulse, wav, first16, 1, result)
                        finally:
                            after = throttled_s(procs)
                            if before is not None and after is not None:
                                result.throttled_s = round(after - before, 2)
                            stop(d.process, 10)
            except (RuntimeError, TimeoutError, OSError) as exc:
                result.problem = str(exc)[:300]
        rounds.append(dataclasses.asdict(result))
    return {"rounds": rounds, "cgroup": kind, "first_s": FIRST_S, "silence_s": SILENCE_S}


#: At every quota the agent must receive this share of the visitor's first seconds, and the session end by silence.
GOAL_KEPT = 0.85


def budget_figures(raw: dict[str, Any]) -> list[Figure]:
    """Per quota: press-to-live against the unconfined round, and the first seconds heard with the session's end."""
    rounds = raw["rounds"]
    free = next((r for r in rounds if r["quota_pct"] is None), None)
    figures: list[Figure] = []
    for r in rounds:
        if r["quota_pct"] is None:
            continue
        name = f"CPU budget {r['quota_pct']:g} % of a core"
        if r["problem"] and r["press_to_live_ms"] is None:
            figures.append(Figure(f"{name}: press-to-live", None, "ms", note=f"not run or failed: {r['problem']}"))
            continue
        kept = r["first_words_kept"]
        ended = r["end_reason"] == "silence"
        figures += [
            Figure(
                f"{name}: press-to-live",
                rounded(r["press_to_live_ms"]),
                "ms",
                "",
                None,
                rounded(free["press_to_live_ms"]) if free else None,
                f"baseline = the same session unconfined; throttled {r['throttled_s']} s ({raw['cgroup']} cgroup)",
            ),
            Figure(
                f"{name}: first {raw['first_s']:g} s heard, ended by silence",
                rounded(100 * kept, 1) if kept is not None else None,
                "%",
                f">= {100 * GOAL_KEPT:.0f} % and silence",
                kept is not None and kept >= GOAL_KEPT and ended,
                rounded(100 * free["first_words_kept"], 1) if free and free["first_words_kept"] is not None else None,
                f"ended by {r['end_reason']}"
                + (f" ({r['failure']})" if r["failure"] else "")
                + (f"; {r['problem']}" if r["problem"] else ""),
            ),
        ]
    return figures
