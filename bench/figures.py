"""Each benchmark's raw readings turned into table figures, each with its goal and baseline."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Figure, Samples, percentile, rounded
from bench.floor import idle_vs_floor
from bench.presslive import Sample
from bench.pulse import PulseAudio
from bench.resources import in_call, soak
from kiosk_sandbox.agent import THINK_S

GOAL_P50_MS = 250.0
#: Press to live may take at most 5 % longer than a bare LiveKit client's broker call, connect and publish.
GOAL_RATIO = 1.05
GOAL_KEPT = 1.0
#: Alignment works in 10 ms frames; a frame or two at a part's edge may be misjudged either way.
KEPT_TOLERANCE = 0.01
GOAL_IDLE_PCT = 0.5
GOAL_CALL_RATIO = 0.9
#: In a call the kiosk may use at most the CPU of LiveKit's native audio path (WebRTC's ADM doing all the audio).
GOAL_CALL_PLATFORM_RATIO = 1.0
#: The scripted agent's own part of a turn (ms): it ends a turn after 0.6 s of pause (``TurnDetector``), then thinks
#: for ``kiosk_sandbox.agent.THINK_S``.
AGENT_TURN_MS = 600 + THINK_S * 1000
GOAL_IDLE_WAKE_ON_RATIO = 1.5
GOAL_IDLE_WAKE_OFF_RATIO = 1.3
#: Idle CPU against a minimal voice-activated listener (one 16 kHz, 30 ms input stream with webrtcvad).
GOAL_IDLE_VAD_RATIO = 1.5
#: The speaker callback keeps real time: at least this share of 100 blocks per second, and no device underrun.
GOAL_SPEAKER_PCT = 99.0
#: Idle RSS (MB): a kiosk spends its life idle, on boards with 512 MB in all.
GOAL_RSS_IDLE_MB = 80.0
GOAL_GROWTH_MB = 10.0
GOAL_LATENESS_S = (0.0, 0.5)
SOAK_SILENCE_S = 0.5


def press_figures(samples: dict[str, list[Sample]], speech48: Samples) -> tuple[list[Figure], dict[str, Any]]:
    """Press-to-live, first words kept and silence-end precision."""
    # The first microphone audio at the agent: the pre-connect buffer (the words spoken while connecting) or the
    # first live frame, whichever came first. A client without pre-roll only has live frames.
    # A session in which the agent never had the speech counts as missing, on either side (see the notes).
    arrivals = [min(s.press_to_audio_ms or math.inf, s.preconnect_arrival_ms or math.inf) for s in samples["kiosk"]]
    kiosk = [a for a in arrivals if a != math.inf]
    base = [s.press_to_audio_ms for s in samples["baseline"] if s.press_to_audio_ms is not None]
    kiosk_live = [s.press_to_audio_ms for s in samples["kiosk"] if s.press_to_audio_ms is not None]
    missing = f"; the agent never had the speech in {len(arrivals) - len(kiosk)} kiosk and " + (
        f"{len(samples['baseline']) - len(base)} baseline session(s)"
    )
    k50, k95, b50, b95 = (percentile(v, q) for v, q in ((kiosk, 50), (kiosk, 95), (base, 50), (base, 95)))
    ratio50 = k50 / b50 if k50 and b50 else None
    ratio95 = k95 / b95 if k95 and b95 else None
    kept = [s.kept for s in samples["kiosk"] if s.kept is not None]
    kept_base = [s.kept for s in samples["baseline"] if s.kept is not None]
    late = [s.silence_lateness_s for s in samples["kiosk"] if s.silence_lateness_s is not None]
    speech_s = len(speech48) / 48000
    n = len(kiosk)
    figures = [
        Figure(
            f"press-to-live p50 (n={n})",
            rounded(k50),
            "ms",
            f"<= {GOAL_P50_MS:.0f} ms",
            k50 is not None and k50 <= GOAL_P50_MS,
            rounded(b50),
            "press to the first microphone audio at the agent (pre-connect buffer or live frame)" + missing,
        ),
        Figure("press-to-live p95", rounded(k95), "ms", "", None, rounded(b95)),
        Figure(
            "press-to-live ratio p50",
            rounded(ratio50, 2),
            "x",
            f"<= {GOAL_RATIO:.2f}x",
            ratio50 is not None and ratio50 <= GOAL_RATIO,
        ),
        Figure("press-to-live ratio p95", rounded(ratio95, 2), "x", f"<= {GOAL_RATIO:.2f}x", None),
        Figure(
            "press to first live mic frame p50",
            rounded(percentile(kiosk_live, 50)),
            "ms",
            "",
            None,
            rounded(b50),
            "the kiosk sends live frames once the agent has taken the pre-connect buffer",
        ),
        Figure(
            "room connected p50 (kiosk's own clock)",
            rounded(percentile([s.press_to_connected_ms or math.nan for s in samples["kiosk"]], 50)),
            "ms",
            "",
            None,
            rounded(percentile([s.press_to_connected_ms or math.nan for s in samples["baseline"]], 50)),
        ),
        Figure(
            "pre-connect buffer arrives p50",
            rounded(percentile([s.preconnect_arrival_ms or math.nan for s in samples["kiosk"]], 50)),
            "ms",
        ),
        Figure(
            f"first words kept, mean ({speech_s:.1f} s of speech from the press)",
            rounded(100 * float(np.mean(kept)), 1) if kept else None,
            "%",
            "100 %",
            bool(kept) and float(np.mean(kept)) >= GOAL_KEPT - KEPT_TOLERANCE,
            rounded(100 * float(np.mean(kept_base)), 1) if kept_base else None,
            "baseline = a client without pre-roll that sends once live",
        ),
        Figure("first words kept, worst session", rounded(100 * min(kept), 1) if kept else None, "%", "100 %"),
        Figure(
            f"silence end lateness p50 (n={len(late)})",
            rounded(percentile(late, 50), 3),
            "s",
            "in [0, 0.5] s",
            None,
        ),
        Figure(
            "silence end lateness min..max",
            rounded(max(late), 3) if late else None,
            "s",
            "in [0, 0.5] s",
            bool(late) and GOAL_LATENESS_S[0] <= min(late) and max(late) <= GOAL_LATENESS_S[1],
            note=f"min {min(late):.3f} s, max {max(late):.3f} s (value = max)" if late else "",
        ),
    ]
    raw = {k: [dataclasses.asdict(s) for s in v] for k, v in samples.items()}
    return figures, raw


def idle_figures(*, sb: Any, pulse: PulseAudio, workdir: Path, seconds: float) -> tuple[list[Figure], dict[str, Any]]:
    """Idle CPU with voice wake on and off beside the floor: two bare streams with the daemon's own settings."""
    raw: dict[str, Any] = idle_vs_floor(sb=sb, pulse=pulse, workdir=workdir, seconds=seconds)
    raw["seconds"] = seconds
    on, off = raw["cpu_wake_on_pct"], raw["cpu_wake_off_pct"]
    r_on, r_off = raw["ratio_wake_on"], raw["ratio_wake_off"]
    note = (
        "baseline = a process holding two PortAudio streams with the daemon's rate, channels, 10 ms blocks and "
        "low latency, empty callbacks, measured over the same windows; ratio = median of per-window ratios"
    )
    return [
        Figure(
            f"idle CPU, voice wake on ({seconds:.0f} s room noise)",
            rounded(on, 2),
            "%",
            f"<= {GOAL_IDLE_PCT} %",
            on <= GOAL_IDLE_PCT,
            rounded(raw["cpu_floor_wake_on_pct"], 2),
            note,
        ),
        Figure(
            "idle CPU ratio to the floor, voice wake on",
            rounded(r_on, 2),
            "x",
            f"<= {GOAL_IDLE_WAKE_ON_RATIO:.1f}x",
            r_on is not None and r_on <= GOAL_IDLE_WAKE_ON_RATIO,
        ),
        Figure(
            "idle CPU ratio to a 16 kHz / 30 ms VAD listener, voice wake on",
            rounded(raw["ratio_vad_wake_on"], 2),
            "x",
            f"<= {GOAL_IDLE_VAD_RATIO:.1f}x",
            raw["ratio_vad_wake_on"] is not None and raw["ratio_vad_wake_on"] <= GOAL_IDLE_VAD_RATIO,
            None,
            "baseline = a process holding one 16 kHz mono input stream in 30 ms blocks, each judged by webrtcvad, "
            f"over the same windows: {raw['cpu_vad_floor_wake_on_pct']:.2f} % of a core",
        ),
        Figure("idle CPU, voice wake off", rounded(off, 2), "%", "", None, rounded(raw["cpu_floor_wake_off_pct"], 2)),
        Figure(
            "idle CPU ratio to the floor, voice wake off",
            rounded(r_off, 2),
            "x",
            f"<= {GOAL_IDLE_WAKE_OFF_RATIO:.1f}x",
            r_off is not None and r_off <= GOAL_IDLE_WAKE_OFF_RATIO,
        ),
    ], raw


def call_figures(
    *, sb: Any, pulse: PulseAudio, workdir: Path, speech48: Samples, seconds: float
) -> tuple[list[Figure], dict[str, Any]]:
    """In-call CPU against LiveKit's MediaDevices and against its native PlatformAudio, and RSS in a call."""
    raw: dict[str, Any] = in_call(sb=sb, pulse=pulse, workdir=workdir, speech48=speech48, seconds=seconds)
    raw["seconds"] = seconds
    ratio = raw["cpu_call_pct"] / raw["cpu_call_baseline_pct"] if raw["cpu_call_baseline_pct"] else None
    ratio_platform = raw["cpu_call_pct"] / raw["cpu_call_platform_pct"] if raw["cpu_call_platform_pct"] else None
    return [
        Figure(
            f"in-call CPU ({seconds:.0f} s, speech both ways)",
            rounded(raw["cpu_call_pct"], 2),
            "%",
            "",
            None,
            rounded(raw["cpu_call_baseline_pct"], 2),
            "baseline = rtc.MediaDevices (APM + publish + playback) in its own process",
        ),
        Figure(
            "in-call CPU ratio, kiosk / MediaDevices",
            rounded(ratio, 2),
            "x",
            f"<= {GOAL_CALL_RATIO:.1f}x",
            ratio is not None and ratio <= GOAL_CALL_RATIO,
        ),
        Figure(
            "in-call CPU beside rtc.PlatformAudio",
            rounded(raw["cpu_call_pct"], 2),
            "%",
            "",
            None,
            rounded(raw["cpu_call_platform_pct"], 2),
            "baseline = rtc.PlatformAudio (WebRTC's audio device module: native capture with AEC, NS and AGC, publish, "
            "native playout) in its own process, measured after MediaDevices over the same seconds of the same speech",
        ),
        Figure(
            "in-call CPU ratio, kiosk / PlatformAudio",
            rounded(ratio_platform, 2),
            "x",
            f"<= {GOAL_CALL_PLATFORM_RATIO:.1f}x",
            ratio_platform is not None and ratio_platform <= GOAL_CALL_PLATFORM_RATIO,
        ),
        Figure(
            "speaker callback pace in a call",
            rounded(raw["speaker_real_time_pct"], 1),
            "%",
            f">= {GOAL_SPEAKER_PCT:.0f} % of real time",
            raw["speaker_real_time_pct"] >= GOAL_SPEAKER_PCT,
            rounded(raw["probe_blocks_per_s"], 1),
            f"{raw['speaker_blocks_per_s']:.1f} output blocks/s of 100; baseline = blocks/s of a bare output stream "
            f"with the same settings over the same window ({raw['probe_underruns']:.0f} underruns): the device's "
            "own pace on this machine",
        ),
        Figure(
            "speaker pace against the bare stream",
            rounded(raw["speaker_blocks_per_s"] / raw["probe_blocks_per_s"], 3) if raw["probe_blocks_per_s"] else None,
            "x",
            f">= {GOAL_SPEAKER_PCT / 100:.2f}x",
            bool(raw["probe_blocks_per_s"])
            and raw["speaker_blocks_per_s"] / raw["probe_blocks_per_s"] >= GOAL_SPEAKER_PCT / 100,
        ),
        Figure(
            "speaker underruns in a call",
            raw["speaker_underruns"],
            "",
            "0",
            raw["speaker_underruns"] == 0,
            note=f"the device ran dry (PortAudio's output underflow) over {seconds:.0f} s; "
            f"{raw['speaker_starved']:.0f} blocks the loop left short",
        ),
        Figure(
            f"turn latency in a call (median of {raw['turns']:.0f} turns)",
            None if math.isnan(raw["turn_p50_ms"]) else rounded(raw["turn_p50_ms"]),
            "ms",
            "",
            None,
            rounded(AGENT_TURN_MS),
            "end of the visitor's speech (the kiosk's VAD) to the agent's first sound at the speaker; baseline = the "
            "scripted agent's own part (its 0.6 s end of turn and 0.6 s think time): the rest is the kiosk, the "
            "SDK's jitter buffer and the local link",
        ),
        Figure("RSS in call", rounded(raw["rss_call_mb"]), "MB", "", None, rounded(raw["rss_call_baseline_mb"])),
        Figure(
            "RSS in call beside rtc.PlatformAudio",
            rounded(raw["rss_call_mb"]),
            "MB",
            "",
            None,
            rounded(raw["rss_call_platform_mb"]),
        ),
    ], raw


def memory_figures(
    *, sb: Any, pulse: PulseAudio, workdir: Path, sessions: int, idle: Any
) -> tuple[list[Figure], dict[str, Any]]:
    """RSS idle, RSS growth and file descriptors over a soak, and sessions left open at the broker."""
    result = soak(sb=sb, pulse=pulse, workdir=workdir, sessions=sessions, silence_s=SOAK_SILENCE_S)
    raw = dataclasses.asdict(result)
    rss_idle = idle.get("rss_idle_wake_off_mb") if isinstance(idle, dict) else result.rss_mb[0]
    growth = result.rss_mb[-1] - result.rss_mb[0]
    fds_start, fds_end = result.fds[0], result.fds[-1]
    per = result.seconds / max(1, result.sessions)
    return [
        Figure(
            "RSS idle" if isinstance(idle, dict) else "RSS idle (after 2 sessions)",
            rounded(rss_idle),
            "MB",
            f"<= {GOAL_RSS_IDLE_MB:.0f} MB",
            rss_idle <= GOAL_RSS_IDLE_MB,
        ),
        Figure(
            f"RSS growth over {result.sessions} sessions",
            rounded(growth),
            "MB",
            f"<= {GOAL_GROWTH_MB:.0f} MB",
            growth <= GOAL_GROWTH_MB,
            rounded(result.rss_mb[0]),
            f"baseline = RSS after two warm-up sessions; peak {max(result.rss_mb):.1f} MB; {per:.2f} s per session",
        ),
        Figure("open FDs after the soak", float(fds_end), "", f"<= {fds_start} (before)", fds_end <= fds_start),
        Figure(
            "sessions left open at the broker",
            float(result.open_at_broker),
            "",
            "0",
            result.open_at_broker == 0 and result.not_ended == 0,
            note=f"{result.not_ended} session(s) not ended by a broker end call; failures {result.failures or 'none'}",
        ),
        Figure(
            "soak sessions that stalled",
            float(len(result.stuck)),
            "",
            "0",
            not result.stuck,
            note="; ".join(result.stuck)[:600],
        ),
        Figure(
            "soak session time, first 25 -> last 25",
            rounded(float(np.mean(result.session_s[-25:])), 3) if result.session_s else None,
            "s",
            "",
            None,
            rounded(float(np.mean(result.session_s[:25])), 3) if result.session_s else None,
            f"daemon CPU over the soak {result.cpu_s:.0f} s in {result.seconds:.0f} s",
        ),
    ], raw


def echo_figures(raw: dict[str, Any]) -> list[Figure]:
    """ERLE and double-talk loss from :mod:`bench.echo`."""
    return [
        Figure(
            "echo: ERLE (APM + echo gate)", raw["erle_db"], "dB", ">= 30 dB", raw["erle_ok"], raw["erle_baseline_db"]
        ),
        Figure(
            "echo: ERLE of the APM alone (AEC+NS+HPF+AGC)",
            raw["erle_apm_db"],
            "dB",
            note="before the echo gate; the gate only acts while the speaker plays",
        ),
        Figure("echo: double-talk loss", raw["double_talk_loss_db"], "dB", "<= 6 dB", raw["double_talk_ok"]),
    ]


def loopback_figures(raw: dict[str, Any]) -> list[Figure]:
    """Agent answers per visitor turn with the speaker looped into the microphone (:mod:`bench.loopback`), and the
    answers the agent gave its own voice on the same path with echo cancelling off (the baseline)."""
    figures = []
    for r in raw["rounds"]:
        name = f"loop-back {r['delay_ms']} ms, gain {r['gain']}"
        if not r["echo_cancellation"]:
            figures.append(
                Figure(
                    f"{name}, echo cancelling off: answers to its own voice",
                    float(r["answered"] + r["greeting_turns"]),
                    "",
                    note=f"the baseline: {r['visitor_turns']} visitor turns; {r['problem'] or 'fell quiet'}",
                )
            )
            continue
        per_turn = r["answers_per_turn"]
        figures.append(
            Figure(
                f"{name}: agent answers per visitor turn",
                per_turn,
                "",
                "= 1, none to the greeting",
                per_turn == 1.0 and r["greeting_turns"] == 0 and not r["problem"],
                None,
                f"{r['answered']} answers to {r['visitor_turns']} turns, {r['greeting_turns']} to the greeting"
                + (f"; {r['problem']}" if r["problem"] else ""),
            )
        )
    return figures
