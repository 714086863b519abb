"""``kiosk status`` for people: the daemon's status JSON as short lines with words, rounded levels and human durations.

``kiosk status --json`` prints the JSON itself, for machines; this module only reads it, and tolerates keys an older
or newer daemon does not send.
"""

from __future__ import annotations

import time
from typing import Any

#: Why a session ended, in words.
END_WORDS = {
    "silence": "nobody spoke for the silence timeout",
    "max_duration": "it reached its maximum length",
    "button": "the button was pressed",
    "control": "ended from the control socket",
    "agent_left": "the agent left the room",
    "agent_ended": "the agent ended the call",
    "disconnected": "the connection to the room was lost",
    "shutdown": "the daemon was stopping",
    "failure": "something failed",
    "wake_guard": "nobody was listening to the agent (a radio or a conversation nearby?)",
}
#: What failed, in words, with the first thing to check.
FAILURE_WORDS = {
    "broker_unreachable": "the broker could not be reached (network, DNS, broker.url)",
    "broker_timeout": "the broker did not answer in time (broker.timeout_s, network)",
    "broker_unauthorized": "the broker refused the API key (check the key and its source)",
    "broker_rejected": "the broker rejected the request (agent id, overrides)",
    "broker_error": "the broker had an error (see the log)",
    "broker_malformed": "the broker's answer could not be read (dialect?)",
    "clock": "the system clock is wrong (NTP)",
    "connect_failed": "joining the room failed",
    "connect_timeout": "joining the room took too long",
    "agent_no_show": "the agent did not join the room",
    "audio_device": "an audio device failed",
    "secret_unreadable": "the API key could not be read",
    "internal": "an internal error (see the log)",
    "first_words_timeout": "sending the first words to the agent took too long (network)",
    "uplink_timeout": "the microphone uplink to the room stalled (network)",
    "state_dir": "the state directory cannot be written: read-only or full (daemon.state_dir; the log names which)",
    "broker_unresolvable": "the broker's host name does not resolve (DNS, broker.url)",
    "network_lost": "the network to the room was lost for longer than session.network_lost_s (Wi-Fi, router)",
    "duplicate_identity": "another kiosk joined with the same identity (device.identity must differ per kiosk)",
    "room_closed": "the server closed the room before the agent spoke (agent crashed? server restart?)",
}
#: Why voice wake was refused, in words.
REFUSAL_WORDS = {"too_quiet": "too quiet", "backoff": "while resting", "hourly_cap": "over the hourly limit"}
AGENT_WORDS = {"speaking": "agent speaking", "listening": "agent listening", "thinking": "agent thinking"}


def duration(seconds: float | None) -> str:
    """Seconds as people say them: "0.4 s", "12 s", "3 min 5 s", "2 h 10 min", "3 d 4 h"; "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = round(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if s >= size:
            rest = (s % size) // sub_size
            return f"{s // size} {unit}" + (f" {rest} {sub}" if rest else "")
    return f"{s} s"


def ago(epoch: float | None, now: float) -> str:
    """A past wall-clock time: "just now", "5 min ago", or the local date and time for anything over a day."""
    if epoch is None:
        return "-"
    passed = now - epoch
    if passed < 5:
        return "just now"
    if passed < 86400:
        return f"{duration(passed)} ago"
    return time.strftime("%b %d %H:%M", time.localtime(epoch))


def why(reason: str | None, failure: str | None) -> str:
    """An end reason (and failure) in words, keeping the names operators grep for."""
    if failure:
        return f"{reason or 'failure'} ({failure}): {FAILURE_WORDS.get(failure, failure)}"
    if reason is None:
        return "-"
    return f"{reason}: {END_WORDS.get(reason, reason)}"


def format_status(status: dict[str, Any], *, now: float | None = None) -> str:
    """A human-readable summary of ``kiosk status --json``."""
    now = time.time() if now is None else now
    lines = [_state_line(status)]
    if status.get("problem"):
        lines.append(f"problem:     {status['problem']}")
    session = status.get("session")
    if session:
        live = "" if session.get("live", True) else ", connecting"
        if session.get("reconnects"):
            live += f", {session['reconnects']} reconnect{'s' if session['reconnects'] != 1 else ''}"
        lines.append(
            f"session:     #{session.get('id')} room {session.get('room') or '-'}, "
            f"{duration(session.get('duration_s'))}{live}"
        )
    turns = status.get("turn_latency")
    if turns and turns.get("turns"):
        count = turns["turns"]
        lines.append(
            f"turn wait:   {turns['last_ms']} ms last, {turns['p50_ms']} ms median over {count} "
            f"turn{'s' if count != 1 else ''} (end of speech to the agent's voice)"
        )
    last = status.get("last_end")
    if last:
        lines.append(f"last end:    {why(last.get('reason'), last.get('failure'))}, {ago(last.get('at'), now)}")
    wake = status.get("wake_guard")
    if wake:
        lines.append("voice wake:  " + _wake_line(wake))
    audio = status.get("audio")
    if audio:
        lines.append("audio:       " + _audio_line(audio))
        echo = audio.get("echo_cancellation")
        if isinstance(echo, dict):
            lines.append(f"echo cancel: {'on' if echo.get('enabled') else 'off'} ({echo.get('why')})")
    if status.get("volume") is not None:
        muted = "MUTED (nothing reaches the agent or voice wake)" if status.get("muted") else "on"
        lines.append(f"controls:    volume {round(status['volume'] * 100)} %, microphone {muted}")
    counters = status.get("counters") or {}
    if counters:
        lines.append("counters:    " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    if status.get("metrics"):
        lines.append(f"metrics:     {status['metrics']}")
    if status.get("uptime_s") is not None:
        lines.append(f"uptime:      {duration(status['uptime_s'])}")
    versions = status.get("versions") or {}
    if versions:
        lines.append("versions:    " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    recent = status.get("recent") or []
    if recent:
        lines.append("last sessions (newest first):")
        lines += [_recent_line(entry, now) for entry in recent[:5]]
    return "\n".join(lines)


def _state_line(status: dict[str, Any]) -> str:
    state = status.get("state", "?")
    if status.get("agent"):
        return (
            f"state:       {state} ({status['agent']}): {AGENT_WORDS.get(status['agent'], 'agent ' + status['agent'])}"
        )
    if state == "error" and status.get("failure"):
        return f"state:       error: {FAILURE_WORDS.get(status['failure'], status['failure'])} ({status['failure']})"
    if state == "idle":
        return "state:       idle: ready for a visitor"
    if state == "reconnecting":
        session = status.get("session") or {}
        since, bound = session.get("reconnecting_s"), session.get("network_lost_s")
        until = f", ends as network_lost after {duration(bound)}" if bound is not None else ""
        return f"state:       reconnecting: the network dropped {duration(since)} ago; the SDK is reconnecting{until}"
    return f"state:       {state}"


def _wake_line(wake: dict[str, Any]) -> str:
    parts = [f"{wake.get('wakes_last_hour', 0)} of {wake.get('max_per_hour', '?')} wakes this hour"]
    if wake.get("resting_s"):
        parts.insert(0, f"resting {duration(wake['resting_s'])} (after sessions nobody listened to)")
    refusals = wake.get("refusals") or {}
    if refusals:
        parts.append("refused " + ", ".join(f"{v} {REFUSAL_WORDS.get(k, k)}" for k, v in refusals.items()))
    return "; ".join(parts)


def _audio_line(audio: dict[str, Any]) -> str:
    parts = []
    for key, name in (("input", "microphone"), ("output", "speaker")):
        device = audio.get(key)
        if isinstance(device, dict):
            rate = f", {device['samplerate'] / 1000:g} kHz" if device.get("samplerate") else ""
            state = "ok" if device.get("ok") else f"FAILING: {device.get('last_error') or 'down'}"
            if key == "input" and device.get("ok") and audio.get("input_muted_by_device"):
                state = "MUTED at the device (its own mute button: exact zeros)"
            parts.append(f"{name} ({device.get('device') or 'default'}{rate}) {state}")
    if audio.get("noise_floor_dbfs") is not None:
        parts.append(f"noise floor {round(audio['noise_floor_dbfs'])} dBFS")
    xruns = sum(int(audio.get(k) or 0) for k in ("input_overflows", "output_underruns"))
    dropped = sum(int(audio.get(k) or 0) for k in ("input_dropped_blocks", "reverse_dropped_blocks"))
    starved = int(audio.get("output_starved_blocks") or 0)
    parts.append(f"{xruns} xruns, {dropped} blocks dropped, {starved} speaker blocks late")
    cpu = audio.get("cpu")
    if isinstance(cpu, dict) and (cpu.get("short") or cpu.get("episodes")):
        quota = f", quota {cpu['quota_cores'] * 100:g} % of a core" if cpu.get("quota_cores") else ""
        state = "SHORT OF CPU now" if cpu.get("short") else "short of CPU earlier"
        parts.append(f"{state} ({cpu.get('episodes')} times, throttled {cpu.get('throttled_s')} s{quota})")
    return "; ".join(parts)


def _recent_line(entry: dict[str, Any], now: float) -> str:
    trigger = entry.get("trigger") or "?"
    return (
        f"  #{entry.get('id'):<4} {ago(entry.get('ended_at'), now):<16} {trigger:<8} "
        f"{duration(entry.get('duration_s')):<12} {why(entry.get('end_reason'), entry.get('failure'))}"
    )
