"""The wake guard's policy with a clock the tests advance: the gate, the talk-over judge, and five minutes of radio."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from kiosk.config import SessionConfig, TriggerConfig
from kiosk.reasons import EndReason
from kiosk.wakeguard import HOUR_S, Refusal, TalkoverJudge, WakeGate

LOUD = -25.0
TICK = 0.1


def test_quiet_speech_does_not_wake() -> None:
    """A wake below trigger.wake_min_dbfs is refused as too quiet; a louder one is admitted."""
    gate = WakeGate(config=TriggerConfig(wake_min_dbfs=-40))
    assert gate.admit(0.0, level_dbfs=-52.0) == Refusal.TOO_QUIET
    assert gate.admit(1.0, level_dbfs=-30.0) is None
    assert gate.refusals[Refusal.TOO_QUIET] == 1 and gate.admitted == 1


def test_back_off_doubles_after_each_unheard_session_and_a_press_resets_it() -> None:
    """Guard ends in a row rest voice wake 300, 600, 1200 then 1800 s (the cap); a pressed session clears the rest."""
    gate = WakeGate(config=TriggerConfig(wake_max_per_hour=100))
    now = 0.0
    rests = []
    for _ in range(4):
        assert gate.admit(now, level_dbfs=LOUD) is None
        rest = gate.session_ended(now + 10, woke=True, reason=EndReason.WAKE_GUARD, listened=False)
        rests.append(rest)
        assert gate.admit(now + 10 + rest - 1, level_dbfs=LOUD) == Refusal.BACKOFF
        now += 10 + rest
    assert rests == [300.0, 600.0, 1200.0, 1800.0]
    gate.session_ended(now, woke=False, reason=EndReason.SILENCE, listened=False)
    assert gate.admit(now + 1, level_dbfs=LOUD) is None
    assert gate.session_ended(now + 20, woke=True, reason=EndReason.WAKE_GUARD, listened=False) == 300.0


def test_a_session_someone_listened_to_resets_the_back_off() -> None:
    """A voice-woken session that ended by silence after a listened turn clears the strikes."""
    gate = WakeGate(config=TriggerConfig())
    gate.admit(0.0, level_dbfs=LOUD)
    gate.session_ended(10.0, woke=True, reason=EndReason.MAX_DURATION, listened=True)
    assert gate.status(10.0)["strikes"] == 1
    gate.admit(400.0, level_dbfs=LOUD)
    assert gate.session_ended(460.0, woke=True, reason=EndReason.SILENCE, listened=True) == 0.0
    assert gate.status(460.0)["strikes"] == 0


def test_wakes_are_capped_per_hour() -> None:
    """After trigger.wake_max_per_hour wakes, more are refused until the oldest is an hour old."""
    gate = WakeGate(config=TriggerConfig(wake_max_per_hour=3, wake_backoff_s=0))
    for t in (0.0, 100.0, 200.0):
        assert gate.admit(t, level_dbfs=LOUD) is None
    assert gate.admit(300.0, level_dbfs=LOUD) == Refusal.HOURLY_CAP
    assert gate.admit(HOUR_S + 1, level_dbfs=LOUD) is None
    assert gate.status(HOUR_S + 1)["wakes_last_hour"] == 3


def _feed(judge: TalkoverJudge, start: float, end: float, *, agent: bool, room: bool) -> str | None:
    t = start
    while t < end - 1e-9:
        t = round(t + TICK, 6)
        verdict = judge.observe(t, agent_speaking=agent, room_speaking=room)
        if verdict:
            return verdict
    return None


def test_a_visitor_who_listens_confirms_the_session() -> None:
    """The room quiet while the agent speaks: the turn is listened to and nothing ends the session."""
    judge = TalkoverJudge(config=SessionConfig(), agent_joined_at=0.0)
    assert _feed(judge, 0.0, 1.0, agent=False, room=True) is None
    assert _feed(judge, 1.0, 4.0, agent=True, room=False) is None
    assert judge.listened
    assert _feed(judge, 4.0, 30.0, agent=False, room=True) is None


def test_talking_over_two_turns_in_a_row_ends_it() -> None:
    """Two agent turns the room talked through end the session, even after an earlier listened turn."""
    judge = TalkoverJudge(config=SessionConfig(), agent_joined_at=0.0)
    assert _feed(judge, 0.0, 3.0, agent=True, room=False) is None
    assert _feed(judge, 3.0, 4.0, agent=False, room=True) is None
    assert _feed(judge, 4.0, 7.0, agent=True, room=True) is None
    assert _feed(judge, 7.0, 8.0, agent=False, room=True) is None
    verdict = _feed(judge, 8.0, 11.0, agent=True, room=True)
    assert verdict is not None and "talked over 2" in verdict


def test_an_agent_nobody_listens_to_ends_at_the_confirm_deadline() -> None:
    """No turn listened to within session.wake_confirm_s of the agent joining ends it (the agent never spoke)."""
    judge = TalkoverJudge(config=SessionConfig(wake_confirm_s=12), agent_joined_at=5.0)
    assert _feed(judge, 5.0, 16.9, agent=False, room=True) is None
    assert _feed(judge, 16.9, 17.2, agent=False, room=True) == "nobody listened to the agent since it joined"


# ---- five minutes of radio against the defaults ----------------------------------------------------------------------


@dataclass
class Radio:
    """Speech from a radio: sentences of 2-5 s, pauses of ``pause`` s (0 = continuous), at a visitor's level."""

    rng: random.Random
    pause: tuple[float, float]
    spans: list[tuple[float, float]] = field(default_factory=list)

    def build(self, seconds: float) -> None:
        t = 0.0
        while t < seconds:
            length = self.rng.uniform(2.0, 5.0)
            self.spans.append((t, t + length))
            t += length + self.rng.uniform(*self.pause)

    def speaking(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.spans)

    def sentence_starts(self) -> list[float]:
        return [a for a, _ in self.spans]


def _simulate(radio: Radio, *, seconds: float, agent_replies: bool, connect_s: float = 2.0) -> float:
    """Seconds in session while ``radio`` talks for ``seconds``, with the default guard and a responsive agent."""
    trigger, session = TriggerConfig(voice_wake=True), SessionConfig()
    gate = WakeGate(config=trigger)
    in_session = 0.0
    t, idle_since = 0.0, -100.0
    wakes = [s + 0.4 for s in radio.sentence_starts()]  # the VAD wakes 0.4 s into a sentence
    while t < seconds:
        wake = next((w for w in wakes if w >= t and radio.speaking(w)), None)
        if wake is None or wake >= seconds:
            break
        t = wake
        if t - idle_since < trigger.cooldown_s or gate.admit(t, level_dbfs=LOUD) is not None:
            t += TICK
            continue
        live, joined = t + connect_s, t + connect_s + 1.0
        judge = TalkoverJudge(config=session, agent_joined_at=joined)
        agent_until = joined + 0.5 + 2.5  # the greeting
        turn_at = joined
        now, reason = joined, EndReason.WAKE_GUARD
        while True:
            now = round(now + TICK, 6)
            if agent_replies and now >= agent_until and not radio.speaking(now - 0.6) and now - turn_at > 4:
                agent_until, turn_at = now + 1.0 + 3.0, now  # thinks 1 s, answers for 3 s, whoever talks
            speaking = agent_until - 3.0 <= now < agent_until or joined + 0.5 <= now < joined + 3.0
            if judge.observe(now, agent_speaking=speaking, room_speaking=radio.speaking(now)):
                break
            if now - live >= session.wake_max_duration_s:
                reason = EndReason.MAX_DURATION
                break
        end = min(now + 0.5, seconds)  # teardown
        in_session += max(0.0, end - wake)
        gate.session_ended(end, woke=True, reason=reason, listened=judge.listened)
        t = idle_since = end
    return in_session


@pytest.mark.parametrize(
    ("pause", "agent_replies"),
    [((0.4, 1.2), True), ((0.4, 1.2), False), ((0.0, 0.05), True), ((1.0, 3.0), True)],
    ids=["speech-with-pauses", "agent-silent", "continuous-speech", "long-pauses"],
)
def test_five_minutes_of_radio_hold_the_kiosk_at_most_a_tenth_of_the_time(
    pause: tuple[float, float], agent_replies: bool
) -> None:
    """Under the default guard, 300 s of radio keep the kiosk in session at most 30 s, over many random radios."""
    worst = 0.0
    for seed in range(40):
        radio = Radio(random.Random(seed), pause)
        radio.build(300.0)
        worst = max(worst, _simulate(radio, seconds=300.0, agent_replies=agent_replies))
    assert 0 < worst <= 30.0, worst


def test_tick_reads_speaking_from_recent_audio_and_speech() -> None:
    """Agent audio or room speech within SPEAKING_NOW_S counts as speaking; older does not."""
    talked_over = TalkoverJudge(config=SessionConfig(wake_talkover_turns=1), agent_joined_at=0.0)
    listened = TalkoverJudge(config=SessionConfig(), agent_joined_at=0.0)
    verdict = None
    for step in range(1, 31):
        t = step * TICK
        verdict = verdict or talked_over.tick(t, False, t - 0.05, t - 0.1)
        listened.tick(t, False, t - 0.05, t - 1.0)
    assert verdict is not None and "talked over 1" in verdict
    assert listened.listened
