"""Smoke test of the echo benchmark: it runs at its smallest size and reports every figure."""

from __future__ import annotations

from bench.echo import report, run


def test_echo_benchmark_smoke_reports_its_figures() -> None:
    """A smoke-sized run returns ERLE, double-talk loss and CPU cost with goals and a baseline."""
    result = run(seconds=3.5)
    for key in (
        "erle_db",
        "erle_baseline_db",
        "goal_erle_db",
        "double_talk_loss_db",
        "goal_double_talk_loss_db",
        "us_per_frame",
        "us_per_frame_baseline",
    ):
        assert isinstance(result[key], float), key
    assert result["erle_db"] > result["erle_baseline_db"]
    assert "ERLE" in report(result)
