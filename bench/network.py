"""Speech heard by the agent on a lossy link: the kiosk against a plain ``rtc.MediaDevices`` client.

Both run in a network namespace of their own (:mod:`tests.fixtures.netlink`), joined to the sandbox (on 127.0.0.1,
its port forwarded from the namespace's loopback over the link; media over ICE to the link's root-side address)
through the relay, which loses ``LOSS`` of the packets and delays each by
``DELAY_MS`` +/- ``JITTER_MS`` (uniform, no reordering), both ways, for the whole run: a shop's busy Wi-Fi.

The kiosk is ``python -m kiosk run`` on the private PulseAudio (as :mod:`bench.daemon` runs it); the baseline is
:mod:`bench.netclient`. Rounds alternate, baseline then kiosk, so both see the same link and machine. In each round the
visitor's two questions (:data:`VISITOR`) are played into the microphone sink from the press on, and the session is
ended (a second press, or ``END`` for the baseline) ``TAIL_S`` after the last word. Heard = the share of the voiced
10 ms frames of what the visitor said that the scripted agent received (pre-connect buffer and live stream, cut
into short windows each aligned with :func:`bench.firstwords.kept_fraction`: see :func:`heard_fraction`), a round whose session failed counting as 0. Both
play the agent on the speaker sink (the baseline through ``MediaDevices.open_output``), so both echo cancellers
hear the same far end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import webrtcvad

from bench.common import RATE, Figure, Samples, Sandbox, percentile, rounded, sandbox, speech, stop, write_wav
from bench.daemon import KEY_ENV, daemon
from bench.firstwords import AUDIBLE_RMS, FRAME, frame_rms, kept_fraction
from bench.presslive import _parts, _to16
from bench.pulse import PulseAudio, pulseaudio
from tests.fixtures.netlink import NetLink, open_net_link

LOSS = 0.05
DELAY_MS = 80.0
JITTER_MS = 40.0
VISITOR = ("Hello I am looking for the main library", "When does it open tomorrow morning")
#: Silence between the two questions (s): the scripted agent's answer to the first (its 1 s clip and a replay of the
#: question, after its turn detector's 0.6 s) ends within it, so the second is not spoken over the agent.
GAP_S = 7.0
#: The session ends this long after the visitor's last word: room for the link's delay, a jitter buffer that grew
#: on the lossy link, and a backlog the client still sends.
TAIL_S = 4.0
#: 5 % of the 20 ms Opus packets are lost; concealment hides some, so the goal allows the link's own loss.
GOAL_HEARD = 0.95
#: Received audio is cut at silences this long (s) into utterances, padded by this much (s), and those into windows.
SPLIT_GAP_S = 1.5
SPLIT_PAD_S = 0.3
WINDOW_S = 0.6
#: webrtcvad's settings in :func:`voiced_frames_30ms`: the sandbox agent's turn detector's (kiosk_sandbox.agent_audio).
VAD_AGGRESSIVENESS = 2
VAD_FRAME = 480
STEP_S = 30.0
ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Round:
    """One session on the lossy link."""

    who: str
    room: str = ""
    #: Share of the visitor's voiced time the agent received (see :func:`voiced_share`).
    heard: float = 0.0
    #: Share of the visitor's voiced 10 ms frames found in what the agent received by alignment (see
    #: :func:`heard_fraction`): stricter, it misses words the receiver concealed or time-stretched.
    aligned: float = 0.0
    #: Press to the room being live (kiosk: its status says so, polled every 20 ms; baseline: published), ms.
    press_to_live_ms: float | None = None
    preconnect_seconds: float = 0.0
    preconnect_rejected: str = ""
    problem: str = ""


def visitor_speech(workdir: Path) -> list[Samples]:
    """The two questions, 48 kHz mono each."""
    questions = []
    for number, text in enumerate(VISITOR):
        folder = workdir / f"q{number}"
        folder.mkdir(exist_ok=True)
        questions.append(speech(text, folder))
    return questions


def utterances(part: Samples) -> list[Samples]:
    """``part`` (16 kHz) cut at every silence of ``SPLIT_GAP_S`` or more, each piece padded by ``SPLIT_PAD_S``."""
    audible = np.flatnonzero(frame_rms(part) > AUDIBLE_RMS)
    if not len(audible):
        return []
    gap, pad = round(SPLIT_GAP_S * 100), round(SPLIT_PAD_S * 100)
    breaks = np.flatnonzero(np.diff(audible) > gap)
    starts = np.concatenate([[audible[0]], audible[breaks + 1]])
    ends = np.concatenate([audible[breaks], [audible[-1]]])
    return [part[max(0, (a - pad) * FRAME) : (b + 1 + pad) * FRAME] for a, b in zip(starts, ends, strict=True)]


def windows(segment: Samples) -> list[Samples]:
    """``segment`` as ``WINDOW_S`` windows overlapping by half."""
    size = round(WINDOW_S * 16000)
    return [segment[i : i + size] for i in range(0, max(1, len(segment) - size // 2), size // 2)]


def heard_fraction(reference16: Samples, parts: list[Samples]) -> float:
    """Share of the voiced 10 ms frames of ``reference16`` that the received ``parts`` (16 kHz) hold.

    The parts are cut into utterances and those into short overlapping windows, each placed on the reference by
    :func:`bench.firstwords.kept_fraction` on its own: after a lossy stretch the receiver's jitter buffer plays a
    backlog faster (NetEq's accelerate), so one utterance drifts by tenths of a second against the words it holds,
    more than one offset per part tolerates (:data:`bench.firstwords.MAX_WARP_S`).
    """
    pieces = [w for part in parts for u in utterances(part) for w in windows(u)]
    return kept_fraction(reference16, pieces)[0] if pieces else 0.0


def voiced_frames_30ms(samples16: Samples) -> int:
    """How many 30 ms frames of ``samples16`` (16 kHz) webrtcvad (aggressiveness 2, as the sandbox agent) calls
    speech."""
    vad = webrtcvad.Vad(VAD_AGGRESSIVENESS)
    n = len(samples16) // VAD_FRAME
    frames = samples16[: n * VAD_FRAME].astype("<i2").reshape(n, VAD_FRAME)
    return sum(1 for frame in frames if vad.is_speech(frame.tobytes(), 16000))


def voiced_share(reference16: Samples, parts: list[Samples]) -> float:
    """Speech time the agent received over the speech time the visitor spoke (at most 1).

    Counted by voice activity, not by waveform: a receiver's jitter buffer stretches and squeezes the audio and
    conceals lost packets, which leaves the words heard but no longer aligned sample for sample. Only the visitor
    speaks into the microphone here (no echo path), so every voiced frame received is the visitor's.
    """
    spoken = voiced_frames_30ms(reference16)
    received = sum(voiced_frames_30ms(part) for part in parts)
    return min(1.0, received / spoken) if spoken else 0.0


def _settled(sb: Sandbox, room: str) -> dict[str, Any]:
    """The room's record once the broker ended it and the agent wrote what it received."""
    sb.wait_session(room, lambda r: r["ended_at"] is not None and bool(r["heard"]["live_wav_path"]), STEP_S)
    time.sleep(0.3)  # the agent rewrites its files as it leaves
    return sb.session(room) or {}


def _score(result: Round, record: dict[str, Any], reference16: Samples) -> Round:
    heard = record.get("heard", {})
    parts = _parts(record)
    result.heard = voiced_share(reference16, parts)
    result.aligned = heard_fraction(reference16, parts)
    result.preconnect_seconds = float(heard.get("preconnect_seconds") or 0.0)
    result.preconnect_rejected = str(heard.get("preconnect_rejected") or "")
    return result


def _start_speaking(pulse: PulseAudio, wav: Path) -> subprocess.Popen[bytes]:
    """Start playing ``wav`` into the microphone sink: the visitor speaks from now on."""
    # a low latency, or the null sink renders in the 2 s blocks paplay's default buffer asks for: the microphone
    # would get the first words up to 2 s late
    return subprocess.Popen(["paplay", "--latency-msec=20", "-d", "mic", str(wav)], env=pulse.env)


def _until_end(player: subprocess.Popen[bytes], seconds: float, t0: float) -> None:
    """Wait for the visitor (speaking since ``t0`` for ``seconds``) to finish, then ``TAIL_S`` more."""
    try:
        player.wait(timeout=seconds + STEP_S)
    finally:
        stop(player, 5)
    time.sleep(max(0.0, t0 + seconds + TAIL_S - time.monotonic()))


def baseline_round(
    *, link: NetLink, sb: Sandbox, pulse: PulseAudio, workdir: Path, wav: Path, seconds: float, ref: Samples
) -> Round:
    """One session of the plain MediaDevices client in the namespace."""
    result = Round(who="baseline")
    env = {**pulse.env, KEY_ENV: sb.api_key, "PYTHONPATH": str(ROOT)}
    with (workdir / "netclient.log").open("a") as log:
        client = link.popen(
            [sys.executable, "-m", "bench.netclient", "--url", sb.http_url],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert client.stdin is not None and client.stdout is not None
    try:
        if client.stdout.readline().strip() != "READY":
            raise RuntimeError(f"the baseline client did not start; see {workdir / 'netclient.log'}")
        t0 = time.monotonic()
        client.stdin.write("GO\n")
        client.stdin.flush()
        _until_end(_start_speaking(pulse, wav), seconds, t0)
        room = client.stdout.readline().strip().removeprefix("ROOM ")
        result.room = room
        live = client.stdout.readline().split()
        if live[:1] == ["LIVE"]:
            result.press_to_live_ms = round((float(live[1]) - t0) * 1000, 1)
        client.stdin.write("END\n")
        client.stdin.flush()
        client.wait(timeout=STEP_S)
        if not room:
            raise RuntimeError(f"the baseline client got no room; see {workdir / 'netclient.log'}")
        return _score(result, _settled(sb, room), ref)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired, OSError) as exc:
        result.problem = str(exc)[:300]
        return result
    finally:
        stop(client, 5)


def run(*, workdir: Path, rounds: int) -> dict[str, Any]:
    """``rounds`` baseline and kiosk sessions, alternating, on the impaired link; the raw results."""
    questions = visitor_speech(workdir)
    visitor = np.concatenate([questions[0], np.zeros(int(GAP_S * RATE), np.int16), questions[1]])
    seconds = len(visitor) / RATE
    wav = write_wav(workdir / "visitor.wav", visitor)
    ref = _to16(visitor)
    out: dict[str, Any] = {"kiosk": [], "baseline": [], "loss": LOSS, "delay_ms": DELAY_MS, "jitter_ms": JITTER_MS}
    with (
        open_net_link(relay_log=workdir / "netrelay.log") as link,
        sandbox(workdir, secrets.token_urlsafe(18)) as sb,
        pulseaudio() as pulse,
    ):
        # the kiosk sends its key over plain http:// only to loopback: the sandbox's loopback port, over the link
        link.forward_loopback(int(sb.http_url.rsplit(":", 1)[1]))
        link.impair(loss=LOSS, delay_ms=DELAY_MS, jitter_ms=JITTER_MS)
        prefix = link.command([])
        with daemon(
            sb=sb, pulse=pulse, workdir=workdir / "kiosk", silence_s=60.0, voice_wake=False, prefix=prefix
        ) as d:
            for number in range(rounds):
                base = baseline_round(link=link, sb=sb, pulse=pulse, workdir=workdir, wav=wav, seconds=seconds, ref=ref)
                out["baseline"].append(dataclasses.asdict(base))
                mine = Round(who="kiosk")
                try:
                    t0 = time.monotonic()
                    d.ask("press")
                    player = _start_speaking(pulse, wav)
                    with contextlib.suppress(TimeoutError):  # the session may fail to go live: scored as heard
                        mine.room = str(d.wait_state("live", within=STEP_S)["session"]["room"])
                        mine.press_to_live_ms = round((time.monotonic() - t0) * 1000, 1)
                    _until_end(player, seconds, t0)
                    if not mine.room:
                        mine.room = str((d.ask("status").get("session") or {}).get("room") or "")
                    if d.ask("status").get("state") not in ("idle", "error"):
                        d.ask("press")
                    d.wait_state("idle", within=STEP_S, sessions=number + 1)
                    if not mine.room:
                        raise RuntimeError("the kiosk never named its room")
                    mine = _score(mine, _settled(sb, mine.room), ref)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    mine.problem = str(exc)[:300]
                out["kiosk"].append(dataclasses.asdict(mine))
        counters = link.counters()
        out["link"] = {"up": dataclasses.asdict(counters.up), "down": dataclasses.asdict(counters.down)}
        out["open_at_broker"] = sb.open_sessions()
    out["speech_s"] = round(seconds, 2)
    return out


def network_figures(raw: dict[str, Any]) -> list[Figure]:
    """Speech heard on the lossy link, kiosk against MediaDevices, the ratio, and press-to-live on that link."""

    def mean(who: str, key: str) -> float:
        values = [r[key] for r in raw[who]]
        return float(np.mean(values)) if values else math.nan

    k, b = mean("kiosk", "heard"), mean("baseline", "heard")
    ratio = k / b if b > 0 else None
    up, down = raw["link"]["up"], raw["link"]["down"]
    lost = f"{up['dropped_loss']}/{up['received']} up, {down['dropped_loss']}/{down['received']} down"
    problems = [f"{r['who']}: {r['problem']}" for r in raw["kiosk"] + raw["baseline"] if r["problem"]]
    rejected = sorted({r["preconnect_rejected"] for r in raw["kiosk"] if r["preconnect_rejected"]})
    live = {
        who: [r["press_to_live_ms"] for r in raw[who] if r["press_to_live_ms"] is not None]
        for who in ("kiosk", "baseline")
    }
    name = f"lossy link ({100 * raw['loss']:.0f} % loss, {raw['delay_ms']:.0f} +/- {raw['jitter_ms']:.0f} ms)"
    return [
        Figure(
            f"{name}: speech heard by the agent (n={len(raw['kiosk'])})",
            rounded(100 * k, 1),
            "%",
            f">= {100 * GOAL_HEARD:.0f} %",
            k >= GOAL_HEARD,
            rounded(100 * b, 1),
            f"voiced time received / spoken, {raw['speech_s']} s from the press (two questions); baseline = a plain "
            f"rtc.MediaDevices client in the same namespace on the same link; by alignment (stricter) kiosk "
            f"{100 * mean('kiosk', 'aligned'):.1f} %, baseline {100 * mean('baseline', 'aligned'):.1f} %; "
            f"packets lost {lost}"
            + (f"; pre-connect rejected: {'; '.join(rejected)}" if rejected else "")
            + (f"; problems: {'; '.join(problems)}" if problems else ""),
        ),
        Figure(
            "lossy link: speech heard, kiosk / MediaDevices",
            rounded(ratio, 2),
            "x",
            ">= 1.00x",
            ratio is not None and ratio >= 1.0,
        ),
        Figure(
            "lossy link: speech heard, worst kiosk round",
            rounded(100 * min(r["heard"] for r in raw["kiosk"]), 1) if raw["kiosk"] else None,
            "%",
        ),
        Figure(
            "lossy link: press to live p50",
            rounded(percentile(live["kiosk"], 50)),
            "ms",
            "",
            None,
            rounded(percentile(live["baseline"], 50)),
            f"sessions left open at the broker: {raw['open_at_broker']}",
        ),
    ]
