"""The speaker heard by the microphone: how many times the agent answers one visitor turn.

A kiosk's microphone hears its own speaker. If the echo canceller lets the agent's voice through, the agent takes its
own words for the visitor's and answers them, again and again. Here the sound server makes that path:
PulseAudio's ``module-loopback`` plays the kiosk's speaker (``spk.monitor``) into its microphone (the ``mic`` sink)
after ``delay_ms`` at a linear ``gain``, while ``paplay`` speaks the visitor's turns into the same sink.

One round is one ``kiosk run`` process (a fresh echo canceller, as after a reboot): a press, the agent's greeting,
then ``turns`` visitor turns, each followed by the agent's answer (which replays what it heard) and a quiet spell long
enough for an echo of that answer to become a turn of its own. The scripted agent counts the turns it answered
(``heard.turns`` in the sandbox's session record): one per visitor turn is right; more are answers to the kiosk's own
speaker. The baseline round runs with ``audio.echo_cancellation = false`` on the same path, and shows that the path
does make the agent answer itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import Samples, Sandbox, write_wav
from bench.daemon import Daemon, daemon
from bench.pulse import PulseAudio

#: After the agent went back to listening, this long without a new turn ends a visitor turn's round (s): an echo
#: of the answer's last words arrives ``delay_ms`` later and the agent's turn detector closes a turn 0.6 s after
#: speech stops.
QUIET_S = 3.0
#: A round's step that takes longer than this is given up (s).
STEP_LIMIT_S = 45.0


@dataclass
class Round:
    """One kiosk process on the loop-back path."""

    delay_ms: int
    gain: float
    echo_cancellation: bool
    visitor_turns: int = 0
    #: Turns the agent answered before the visitor spoke: the greeting (and the chime) heard back.
    greeting_turns: int = 0
    #: Turns the agent answered in all.
    answered: int = 0
    problem: str = ""

    @property
    def answers_per_turn(self) -> float | None:
        """Answers per visitor turn (1.0 is right); None before the visitor spoke."""
        return round(self.answered / self.visitor_turns, 2) if self.visitor_turns else None


@contextlib.contextmanager
def loopback(pulse: PulseAudio, delay_ms: int, gain: float) -> Iterator[None]:
    """Play ``spk.monitor`` into the ``mic`` sink after ``delay_ms`` at linear ``gain`` for the block."""
    module = pulse.pactl(
        "load-module",
        "module-loopback",
        "source=spk.monitor",
        "sink=mic",
        f"latency_msec={delay_ms}",
        "source_dont_move=true",
        "sink_dont_move=true",
    ).strip()
    try:
        index = next(
            line.split()[0]
            for line in pulse.pactl("list", "short", "sink-inputs").splitlines()
            if "module-loopback" in line
        )
        # pactl reads a number with a decimal point as a linear factor
        pulse.pactl("set-sink-input-volume", index, f"{gain:.2f}")
        yield
    finally:
        pulse.pactl("unload-module", module)


def _turns(sb: Sandbox, room: str) -> int:
    record = sb.session(room) or {}
    return int(record.get("heard", {}).get("turns", 0))


def _until_quiet(d: Daemon, sb: Sandbox, room: str) -> int:
    """Wait until the agent listens and has answered no new turn for ``QUIET_S``; return the turns answered."""
    deadline = time.monotonic() + STEP_LIMIT_S
    turns, calm_since = _turns(sb, room), None
    while time.monotonic() < deadline:
        now_turns = _turns(sb, room)
        listening = d.ask("status").get("agent") == "listening"
        if now_turns != turns or not listening:
            turns, calm_since = now_turns, None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= QUIET_S:
            return turns
        time.sleep(0.1)
    raise TimeoutError(f"the agent did not fall quiet within {STEP_LIMIT_S:.0f} s (it answered {turns} turns)")


def one_round(*, sb: Sandbox, pulse: PulseAudio, workdir: Path, visitor: Path, turns: int, result: Round) -> Round:
    """One kiosk process through a press, the greeting and ``turns`` visitor turns; fills in ``result``."""
    audio = f"echo_cancellation = {'true' if result.echo_cancellation else 'false'}\n"
    with (
        loopback(pulse, result.delay_ms, result.gain),
        daemon(sb=sb, pulse=pulse, workdir=workdir, silence_s=300.0, voice_wake=False, audio=audio) as d,
    ):
        d.ask("press")
        room = str(d.wait_state("live")["session"]["room"])
        try:
            sb.wait_session(room, lambda r: bool(r["heard"]["greeted"]), within=STEP_LIMIT_S)
            result.greeting_turns = _until_quiet(d, sb, room)
            for _ in range(turns):
                before = _turns(sb, room)
                pulse.play(visitor).wait(timeout=STEP_LIMIT_S)
                result.visitor_turns += 1
                sb.wait_session(room, lambda r, b=before: r["heard"]["turns"] > b, within=STEP_LIMIT_S)
                _until_quiet(d, sb, room)
        except TimeoutError as exc:
            result.problem = str(exc)[:300]
        total = _turns(sb, room)
        if result.visitor_turns == 0:
            result.greeting_turns = total  # the greeting never fell quiet: every answer was to it
        result.answered = total - result.greeting_turns
        if d.ask("status").get("state") != "idle":
            d.ask("press")
        d.wait_state("idle", within=30.0)
    return result


def run(
    *,
    sb: Sandbox,
    pulse: PulseAudio,
    workdir: Path,
    speech48: Samples,
    delays_ms: tuple[int, ...],
    gain: float,
    turns: int,
    baseline: bool = True,
) -> dict[str, Any]:
    """Rounds with echo cancellation at each delay, then (with ``baseline``) one without it at the shortest delay."""
    visitor = write_wav(workdir / "visitor.wav", speech48)
    plan = [(delay, True) for delay in delays_ms] + ([(min(delays_ms), False)] if baseline else [])
    rounds = []
    for number, (delay, aec) in enumerate(plan):
        result = Round(delay_ms=delay, gain=gain, echo_cancellation=aec)
        one_round(sb=sb, pulse=pulse, workdir=workdir / f"round{number}", visitor=visitor, turns=turns, result=result)
        rounds.append({**asdict(result), "answers_per_turn": result.answers_per_turn})
    return {"rounds": rounds, "quiet_s": QUIET_S}
