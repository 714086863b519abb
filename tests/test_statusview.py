"""``kiosk status`` for people: words for reasons, rounded levels, human durations, the last five sessions."""

from __future__ import annotations

import pytest

from kiosk.commands.statusview import duration, format_status

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(0.42, "0.4 s"), (12.4, "12 s"), (185.2, "3 min 5 s"), (3600, "1 h"), (11533, "3 h 12 min"), (200_000, "2 d 7 h")],
)
def test_durations_in_human_units(seconds: float, said: str) -> None:
    """Seconds become s, min, h and d with at most two units."""
    assert duration(seconds) == said


def test_status_in_words() -> None:
    """State, failure and end reasons in words; the noise floor rounded; five of six sessions, newest first."""
    recent = [
        {"id": n, "trigger": "voice" if n % 2 else "button", "end_reason": "silence", "failure": None}
        | {"ended_at": NOW - 600 * (7 - n), "duration_s": 30.0 + n}
        for n in range(6, 0, -1)
    ]
    recent[0] |= {"end_reason": "wake_guard"}
    recent[1] |= {"end_reason": "failure", "failure": "agent_no_show"}
    text = format_status(
        {
            "state": "error",
            "failure": "broker_timeout",
            "last_end": {"session": 6, "reason": "wake_guard", "failure": None, "at": NOW - 75},
            "audio": {
                "input": {"device": "USB Mic", "ok": True, "samplerate": 48000},
                "output": {"device": None, "ok": False, "last_error": "no audio for 2 s"},
                "input_overflows": 3,
                "output_underruns": 1,
                "output_starved_blocks": 2,
                "noise_floor_dbfs": -61.73,
            },
            "uptime_s": 11533,
            "turn_latency": {"turns": 3, "last_ms": 1780, "p50_ms": 1650},
            "wake_guard": {"resting_s": 245.3, "wakes_last_hour": 1, "max_per_hour": 6, "refusals": {"backoff": 7}},
            "recent": recent,
        },
        now=NOW,
    )
    lines = text.splitlines()
    assert "the broker did not answer in time" in lines[0]
    assert "nobody was listening to the agent" in text and "1 min 15 s ago" in text
    assert "noise floor -62 dBFS" in text and "-61.7" not in text
    assert (
        "speaker (default) FAILING: no audio for 2 s" in text and "4 xruns" in text and "2 speaker blocks late" in text
    )
    assert "resting 4 min 5 s" in text and "refused 7 while resting" in text
    assert "uptime:      3 h 12 min" in text
    assert "turn wait:   1780 ms last, 1650 ms median over 3 turns" in text
    sessions = lines[lines.index("last sessions (newest first):") + 1 :]
    assert [line.split()[0] for line in sessions] == ["#6", "#5", "#4", "#3", "#2"]
    assert "agent_no_show" in sessions[1] and "the agent did not join the room" in sessions[1]
    assert "10 min ago" in sessions[0] and "36 s" in sessions[0]


def test_reconnecting_and_the_new_ends_in_words() -> None:
    """Reconnecting says for how long and when it gives up; network_lost, duplicate_identity and agent_ended have
    words."""
    text = format_status(
        {
            "state": "reconnecting",
            "session": {"id": 3, "room": "r", "duration_s": 42.0, "live": True, "reconnects": 2}
            | {"reconnecting_s": 4.2, "network_lost_s": 20.0},
            "last_end": {"session": 2, "reason": "failure", "failure": "network_lost", "at": NOW - 30},
            "recent": [
                {"id": 2, "trigger": "button", "end_reason": "failure", "failure": "duplicate_identity"}
                | {"ended_at": NOW - 30, "duration_s": 5.0},
                {"id": 1, "trigger": "button", "end_reason": "agent_ended", "failure": None}
                | {"ended_at": NOW - 90, "duration_s": 25.0},
            ],
        },
        now=NOW,
    )
    lines = text.splitlines()
    assert lines[0] == (
        "state:       reconnecting: the network dropped 4.2 s ago; the SDK is reconnecting, "
        "ends as network_lost after 20 s"
    )
    assert "2 reconnects" in lines[1]
    assert "network_lost): the network to the room was lost" in text
    assert "same identity" in text and "agent_ended: the agent ended the call" in text
