"""Smoke run of ``python -m bench``: every benchmark runs at tiny sizes and reports every figure as a number.

Benchmarks never gate on speed: this checks only that each figure is present and numeric, so they cannot rot.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.budget import cgroup_kind

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("espeak-ng", "sox", "pulseaudio", "pactl", "paplay")
EXPECTED = (
    "press-to-live p50",
    "press-to-live p95",
    "press-to-live ratio p50",
    "first words kept, mean",
    "first words kept, worst session",
    "silence end lateness p50",
    "silence end lateness min..max",
    "idle CPU, voice wake on",
    "idle CPU, voice wake off",
    "in-call CPU (",
    "in-call CPU ratio, kiosk / MediaDevices",
    "in-call CPU beside rtc.PlatformAudio",
    "in-call CPU ratio, kiosk / PlatformAudio",
    "RSS in call",
    "RSS in call beside rtc.PlatformAudio",
    "turn latency in a call",
    "RSS idle",
    "RSS growth over",
    "open FDs after the soak",
    "sessions left open at the broker",
    "echo: ERLE",
    "echo: double-talk loss",
    "loop-back 60 ms",
    "first words kept, real agent, 2 s",
    "lossy link (5 % loss, 80 +/- 40 ms): speech heard by the agent",
    "lossy link: speech heard, kiosk / MediaDevices",
)
#: The CPU budget's figures need a writable CPU cgroup (this machine's, or none in a chroot that sees no cgroupfs).
BUDGET = ("CPU budget 15 % of a core: press-to-live", "CPU budget 15 % of a core: first 3 s heard")
#: Figures whose baseline column is a process measured in the same run: the baseline must be a number too.
WITH_BASELINE = ("in-call CPU (", "in-call CPU beside rtc.PlatformAudio", "RSS in call", "turn latency in a call")


@pytest.mark.slow
@pytest.mark.pulse
@pytest.mark.timeout(480)
def test_bench_smoke_reports_every_figure(tmp_path: Path) -> None:
    """``python -m bench --smoke --out DIR`` exits 0, prints the table and writes a numeric value for each figure."""
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the benchmarks need {', '.join(missing)}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XDG_CONFIG_HOME", None)  # the benchmarks bring their own ALSA config
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=460,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PASS" in done.stdout or "MISS" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    figures = {f["name"]: f for f in results["figures"]}
    for prefix in EXPECTED:
        matches = [f for name, f in figures.items() if name.startswith(prefix)]
        assert matches, f"no figure {prefix!r} in {sorted(figures)}"
        value = matches[0]["value"]
        assert isinstance(value, int | float) and math.isfinite(value), (prefix, value)
    if cgroup_kind() is not None:
        for prefix in BUDGET:
            [figure] = [f for name, f in figures.items() if name.startswith(prefix)]
            assert isinstance(figure["value"], int | float) and math.isfinite(figure["value"]), figure
            assert isinstance(figure["baseline"], int | float), figure
    else:
        [figure] = [f for name, f in figures.items() if name.startswith("CPU budget 15 %")]
        assert figure["value"] is None and "no writable CPU cgroup" in figure["note"], figure
    for prefix in WITH_BASELINE:
        for name, figure in figures.items():
            if name.startswith(prefix):
                baseline = figure["baseline"]
                assert isinstance(baseline, int | float) and math.isfinite(baseline), (name, baseline)
    for figure in figures.values():
        assert figure["ok"] in (True, False, None)
    if importlib.util.find_spec("matplotlib") is not None:  # the plot needs the bench extra
        assert (tmp_path / "press_to_live.png").stat().st_size > 1000
