"""``python -m bench``: every benchmark of the kiosk against its baseline, one table, results.json and a plot.

    python -m bench [--smoke] [--only press,idle,call,memory,loopback,budget,echo,agent,network] [--out DIR]

Without ``--out`` a full run writes ``bench/results.json`` and ``bench/press_to_live.png``; a ``--smoke`` run
(tiny sizes, for the test suite) writes to a temporary directory instead.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import echo
from bench.common import Figure, sandbox, speech
from bench.figures import (
    call_figures,
    echo_figures,
    idle_figures,
    loopback_figures,
    memory_figures,
    press_figures,
)
from bench.pulse import pulseaudio
from bench.report import plot, press_series, table, write_json

NAMES = ("press", "idle", "call", "memory", "loopback", "budget", "echo", "agent", "network")
SPEECH = "Hello I am looking for the main library"
HERE = Path(__file__).resolve().parent


def sizes(smoke: bool) -> dict[str, float]:
    """How big each benchmark is: a full run stays under 15 minutes on a 2-core machine."""
    if smoke:
        return {
            "sessions": 2,
            "silence_every": 2,
            "idle_s": 2.0,
            "call_s": 10.0,  # the speech (6 s) and the agent's answer: one timed turn
            "soak": 5,
            "loopback_turns": 1,
            "echo_s": 3.5,
            "agent": 1,
            "network_rounds": 1,
        }
    return {
        "sessions": 30,
        "silence_every": 2,
        "idle_s": 60.0,
        "call_s": 20.0,
        "soak": 300,
        "loopback_turns": 3,
        "echo_s": 12.0,
        "agent": 2,
        "network_rounds": 3,
    }


#: Seconds of speech from the press for the first-words benchmark with the real agent (smoke: the first only).
AGENT_CLIPS_S = (2.0, 5.0, 10.0)
#: The speaker looped into the microphone (:mod:`bench.loopback`): these echo path delays (ms) at this gain.
LOOPBACK_DELAYS_MS = (60, 200)
LOOPBACK_GAIN = 0.6


def run(*, smoke: bool, only: tuple[str, ...], out: Path) -> tuple[list[Figure], dict[str, object]]:
    """Run the chosen benchmarks; return the figures and the raw details."""
    size = sizes(smoke)
    figures: list[Figure] = []
    details: dict[str, object] = {"sizes": size, "smoke": smoke}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        work = Path(tmp)
        speech48 = speech(SPEECH, work)
        needs_sandbox = set(only) - {"echo", "network"}
        with sandbox(work, secrets.token_urlsafe(18)) if needs_sandbox else _nothing() as sb:
            if "press" in only:
                from bench.presslive import measure

                (work / "press").mkdir()
                samples = asyncio.run(
                    measure(
                        sb=sb,
                        workdir=work / "press",
                        speech48=speech48,
                        sessions=int(size["sessions"]),
                        silence_every=int(size["silence_every"]),
                        silence_s=1.0,
                    )
                )
                new, raw = press_figures(samples, speech48)
                figures += new
                details["press"] = raw
                picture = plot(out / "press_to_live.png", press_series(raw["kiosk"], raw["baseline"]), 250.0)
                details["plot"] = str(picture) if picture else "matplotlib not installed"
            if needs_sandbox - {"press"}:
                with pulseaudio() as pulse:
                    if "idle" in only:
                        new, raw = idle_figures(sb=sb, pulse=pulse, workdir=work, seconds=size["idle_s"])
                        figures += new
                        details["idle"] = raw
                    if "call" in only:
                        new, raw = call_figures(
                            sb=sb, pulse=pulse, workdir=work, speech48=speech48, seconds=size["call_s"]
                        )
                        figures += new
                        details["call"] = raw
                    if "memory" in only:
                        new, raw = memory_figures(
                            sb=sb, pulse=pulse, workdir=work, sessions=int(size["soak"]), idle=details.get("idle")
                        )
                        figures += new
                        details["memory"] = raw
                    if "loopback" in only:
                        from bench import loopback

                        (work / "loopback").mkdir()
                        raw_loop = loopback.run(
                            sb=sb,
                            pulse=pulse,
                            workdir=work / "loopback",
                            speech48=speech48,
                            delays_ms=LOOPBACK_DELAYS_MS[:1] if smoke else LOOPBACK_DELAYS_MS,
                            gain=LOOPBACK_GAIN,
                            turns=int(size["loopback_turns"]),
                            baseline=not smoke,
                        )
                        figures += loopback_figures(raw_loop)
                        details["loopback"] = raw_loop
                    if "budget" in only:
                        from bench import budget

                        (work / "budget").mkdir()
                        quotas = budget.QUOTAS_PCT[:2] if smoke else budget.QUOTAS_PCT
                        raw_budget = budget.run(
                            sb=sb, pulse=pulse, workdir=work / "budget", speech48=speech48, quotas=quotas
                        )
                        figures += budget.budget_figures(raw_budget)
                        details["budget"] = raw_budget
            if "agent" in only:
                from bench import realagent

                (work / "agent").mkdir()
                new, raw = realagent.run(
                    workdir=work / "agent",
                    api_key=sb.api_key,
                    scripted_sb=sb,
                    clips_s=list(AGENT_CLIPS_S[:1] if smoke else AGENT_CLIPS_S),
                    rounds=int(size["agent"]),
                )
                figures += new
                details["agent"] = raw
        if "echo" in only:
            raw_echo = echo.run(seconds=size["echo_s"])
            figures += echo_figures(raw_echo)
            details["echo"] = raw_echo
        if "network" in only:
            figures += _network(work, int(size["network_rounds"]), details)
        logs = Path(tempfile.mkdtemp(prefix="kiosk-bench-logs-"))
        details["logs"] = str(logs)
        for log in work.rglob("*.log"):
            shutil.copy(log, logs / "-".join(log.relative_to(work).parts))
    details["total_s"] = round(time.monotonic() - started, 1)
    return figures, details


def _network(work: Path, rounds: int, details: dict[str, object]) -> list[Figure]:
    """The lossy-link figure (:mod:`bench.network`), or one empty figure saying why the machine cannot run it."""
    from bench import network
    from tests.fixtures.netlink import NetLinkUnavailable

    (work / "network").mkdir()
    try:
        raw = network.run(workdir=work / "network", rounds=rounds)
    except NetLinkUnavailable as exc:
        details["network"] = {"not_run": str(exc)}
        return [Figure("lossy link: speech heard by the agent", None, "%", note=f"not run: {exc}")]
    details["network"] = raw
    return network.network_figures(raw)


class _nothing:
    """A context manager yielding None (no sandbox needed)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every benchmark runs")
    parser.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {', '.join(NAMES)}")
    parser.add_argument("--out", type=Path, default=None, help="where to write results.json and the plot")
    args = parser.parse_args(argv)
    only = tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = set(only) - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(NAMES)}")
    out = args.out or (Path(tempfile.mkdtemp(prefix="kiosk-bench-out-")) if args.smoke else HERE)
    out.mkdir(parents=True, exist_ok=True)
    figures, details = run(smoke=args.smoke, only=only, out=out)
    write_json(out / "results.json", figures, details)
    print(f"\nkiosk benchmarks ({'smoke' if args.smoke else 'full'} run, {details['total_s']} s)\n")
    print(table(figures))
    print(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
