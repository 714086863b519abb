"""The results: a table with each goal beside each figure, results.json, and a press-to-live plot."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from bench.common import Figure


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "":
        return f"{value:g}"
    if unit in {"s", "x"} or (unit == "%" and abs(value) < 10):
        return f"{value:.{3 if unit == 's' else 2}f} {unit}"
    return f"{value:.1f} {unit}"


def table(figures: list[Figure]) -> str:
    """The figures as an aligned text table."""
    rows = [("figure", "value", "baseline", "goal", "")]
    for f in figures:
        mark = "" if f.ok is None else ("PASS" if f.ok else "MISS")
        rows.append((f.name, _fmt(f.value, f.unit), _fmt(f.baseline, f.unit), f.goal, mark))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  - {f.name}: {f.note}" for f in figures if f.note]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))


def write_json(path: Path, figures: list[Figure], details: dict[str, Any]) -> None:
    """Write every figure and the raw details as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"figures": [dataclasses.asdict(f) for f in figures], "details": details}
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def plot(path: Path, series: dict[str, list[float]], goal_ms: float) -> Path | None:
    """Press-to-live CDFs, one per named series, as a PNG; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    lowest = goal_ms
    for label, values in series.items():
        if values:
            xs = sorted(values)
            lowest = min(lowest, xs[0])
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
    ax.axvline(goal_ms, color="grey", linestyle="--", label=f"goal p50 <= {goal_ms:.0f} ms")
    ax.set_xlim(left=max(0.0, lowest - 50))
    ax.set_xlabel("press to microphone audio at the agent (ms)")
    ax.set_ylabel("fraction of sessions")
    ax.set_title("Press-to-live")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def press_series(
    kiosk: list[dict[str, float | None]], baseline: list[dict[str, float | None]]
) -> dict[str, list[float]]:
    """The plotted series from the raw press samples (as stored in results.json)."""

    def first_audio(sample: dict[str, float | None]) -> float:
        live = float(sample["press_to_audio_ms"] or 0.0)
        pre = sample.get("preconnect_arrival_ms")
        return min(live, float(pre)) if pre is not None else live

    return {
        "kiosk: first mic audio (pre-connect buffer or live)": [first_audio(s) for s in kiosk],
        "kiosk: first live frame": [float(s["press_to_audio_ms"] or 0.0) for s in kiosk],
        "baseline client: first live frame": [float(s["press_to_audio_ms"] or 0.0) for s in baseline],
    }
