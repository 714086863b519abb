"""Prometheus metrics of one kiosk: an observer of the session, the broker calls, the audio engine and the wake gate.

Metrics only watch: they are fed by the driver's observer hook, the session summaries, the keeper's ``on_call`` and a
periodic :meth:`KioskMetrics.sample` on the event loop; nothing here dispatches. Everything lives in a private
``CollectorRegistry`` (never the process-global one), served by :mod:`kiosk.daemon.metrics_export`. Names follow
Prometheus conventions: prefix ``kiosk_``, base units in the name, ``_total`` on counters.

============================================  =========  ====================================================
name                                          type       labels / meaning
============================================  =========  ====================================================
kiosk_sessions_started_total                  counter    trigger: button, control, keyboard, voice
kiosk_sessions_ended_total                    counter    reason: silence, max_duration, button, wake_guard, ...
kiosk_session_failures_total                  counter    reason: broker_timeout, agent_no_show, audio_device, ...
kiosk_in_session_seconds_total                counter    time from a session's start to its end (cost)
kiosk_press_to_live_seconds                   histogram  press (or speech start) to the room connected
kiosk_first_words_kept_seconds                histogram  speech before live that reached the agent (pre-connect)
kiosk_session_duration_seconds                histogram  live to end
kiosk_agent_join_seconds                      histogram  live to the agent in the room
kiosk_turn_latency_seconds                    histogram  the visitor's end of speech (kiosk VAD) to the agent's first sound at the speaker
kiosk_reconnects_total                        counter    times a live session's room began reconnecting
kiosk_reconnect_seconds                       histogram  reconnecting to back (or to the end: network_lost)
kiosk_broker_request_duration_seconds         histogram  operation: start, end; outcome: ok, error
kiosk_broker_pending_ends                     gauge      ended sessions the broker has not confirmed yet
kiosk_broker_oldest_pending_end_age_seconds   gauge      age of the oldest of those (0 when none)
kiosk_audio_xruns_total                       counter    direction, kind: overflow (input), underrun (output)
kiosk_audio_output_starved_blocks_total       counter    speaker blocks the loop had not filled (played silence)
kiosk_audio_dropped_blocks_total              counter    path: input (loop fell behind), reverse (echo ref)
kiosk_audio_device_failures_total             counter    direction: input, output
kiosk_audio_device_reopens_total              counter    direction: input, output
kiosk_audio_device_up                         gauge      direction: 1 when the device runs
kiosk_voice_wakes_total                       counter    voice wakes heard while idle (admitted or refused)
kiosk_wake_guard_refusals_total               counter    reason: too_quiet, backoff, hourly_cap
kiosk_wake_guard_rest_seconds                 gauge      how long voice wake still rests
kiosk_cpu_short                               gauge      1 while short of CPU (cgroup quota throttling, or the loop late)
kiosk_cpu_short_episodes_total                counter    times the kiosk became short of CPU
kiosk_cpu_throttled_seconds_total             counter    time the kiosk's cgroup CPU quota throttled it
kiosk_state                                   stateset   the session state (idle, connecting, live, reconnecting, ...)
kiosk_build_info                              info       version, livekit, python
============================================  =========  ====================================================
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Enum, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kiosk import session as sm
from kiosk.audio import AudioHealth
from kiosk.audio.turns import Turn
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.reasons import EndReason, FailureReason
from kiosk.wakeguard import Refusal, WakeGate

PRESS_TO_LIVE_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0)
FIRST_WORDS_BUCKETS = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0)
DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1200.0)
AGENT_JOIN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0)
#: A resume takes well under a second; a full reconnect a second or two; session.network_lost_s is 20 s by default.
RECONNECT_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
BROKER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
#: Voice-to-voice latency of voice agents: about 1.4 s at the median and 3.4 s at p95 are typical published figures.
TURN_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)


class _Sampled(Collector):
    """Yields the families last built by :meth:`KioskMetrics.sample` (the scrape thread only reads a reference)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


class KioskMetrics:
    """The kiosk's metrics in their own registry; wire :meth:`changed` as a driver observer."""

    def __init__(self, *, versions: dict[str, str]) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.started = Counter("kiosk_sessions_started", "Sessions started, by trigger.", ["trigger"], registry=reg)
        self.ended = Counter("kiosk_sessions_ended", "Sessions ended, by end reason.", ["reason"], registry=reg)
        self.failures = Counter(
            "kiosk_session_failures",
            "Failures (at start, during or between sessions), by reason.",
            ["reason"],
            registry=reg,
        )
        self.in_session = Counter(
            "kiosk_in_session_seconds", "Time the kiosk spent in a session (start to end).", registry=reg
        )
        self.press_to_live = Histogram(
            "kiosk_press_to_live_seconds",
            "Press (or speech start) to the room connected.",
            buckets=PRESS_TO_LIVE_BUCKETS,
            registry=reg,
        )
        self.first_words = Histogram(
            "kiosk_first_words_kept_seconds",
            "Speech from before the session was live that reached the agent (pre-connect buffer).",
            buckets=FIRST_WORDS_BUCKETS,
            registry=reg,
        )
        self.duration = Histogram(
            "kiosk_session_duration_seconds", "Session length, live to end.", buckets=DURATION_BUCKETS, registry=reg
        )
        self.agent_join = Histogram(
            "kiosk_agent_join_seconds", "Room connected to the agent joining.", buckets=AGENT_JOIN_BUCKETS, registry=reg
        )
        self.turn_latency = Histogram(
            "kiosk_turn_latency_seconds",
            "The visitor's end of speech (the kiosk's voice activity detector) to the agent's first sound at the "
            "speaker, per turn.",
            buckets=TURN_LATENCY_BUCKETS,
            registry=reg,
        )
        self.reconnects = Counter(
            "kiosk_reconnects", "Times a live session's room began reconnecting (the network dropped).", registry=reg
        )
        self.reconnect_time = Histogram(
            "kiosk_reconnect_seconds",
            "How long the room was reconnecting: until it was back, or until the session ended.",
            buckets=RECONNECT_BUCKETS,
            registry=reg,
        )
        self.broker = Histogram(
            "kiosk_broker_request_duration_seconds",
            "Broker start and end calls, by operation and outcome.",
            ["operation", "outcome"],
            buckets=BROKER_BUCKETS,
            registry=reg,
        )
        self.state = Enum("kiosk_state", "The session state.", states=[str(s) for s in sm.State], registry=reg)
        Info("kiosk_build", "Versions of the kiosk, LiveKit and Python.", registry=reg).info(versions)
        # Every label value exists from the start, so rate() and increase() see the first event too.
        for trigger in sm.Trigger:
            self.started.labels(trigger=str(trigger))
        for reason in EndReason:
            self.ended.labels(reason=str(reason))
        for failure in FailureReason:
            self.failures.labels(reason=str(failure))
        for operation in ("start", "end"):
            for outcome in ("ok", "error"):
                self.broker.labels(operation=operation, outcome=outcome)
        self._sampled = _Sampled()
        reg.register(self._sampled)
        self._opened_at: float | None = None
        self._reconnecting_at: float | None = None

    # ---- observers --------------------------------------------------------------------------------------------------

    def changed(self, old: sm.Snapshot, new: sm.Snapshot) -> None:
        """SessionDriver observer: count starts, ends and failures as the state changes."""
        if new.state == old.state:
            return
        self.state.state(str(new.state))
        now = time.monotonic()
        if new.state == sm.State.RECONNECTING:
            self.reconnects.inc()
            self._reconnecting_at = now
        elif self._reconnecting_at is not None:
            self.reconnect_time.observe(now - self._reconnecting_at)
            self._reconnecting_at = None
        if new.state == sm.State.CONNECTING:
            self.started.labels(trigger=str(new.trigger or sm.Trigger.BUTTON)).inc()
            self._opened_at = now
        elif new.state == sm.State.ENDING and new.end_reason is not None:
            self.ended.labels(reason=str(new.end_reason)).inc()
        elif old.state == sm.State.ENDING and self._opened_at is not None:
            self.in_session.inc(now - self._opened_at)
            self._opened_at = None
        if new.failure is not None and new.state in {sm.State.ENDING, sm.State.ERROR} and old.state != sm.State.ENDING:
            self.failures.labels(reason=str(new.failure)).inc()

    def session_done(self, summary: SessionSummary) -> None:
        """Add a finished session's timings."""
        if summary.press_to_live_ms is not None:
            self.press_to_live.observe(summary.press_to_live_ms / 1000)
            self.duration.observe(summary.duration_s)
            self.first_words.observe(summary.preconnect_s)
        if summary.agent_join_s is not None:
            self.agent_join.observe(summary.agent_join_s)

    def turn(self, turn: Turn) -> None:
        """Turn timer hook: one visitor turn was answered after ``turn.latency_s``."""
        self.turn_latency.observe(turn.latency_s)

    def broker_call(self, operation: str, seconds: float, ok: bool) -> None:
        """Keeper hook: one broker start or end call took ``seconds``."""
        self.broker.labels(operation=operation, outcome="ok" if ok else "error").observe(seconds)

    def sample(
        self, *, audio: AudioHealth, pending_ends: int, oldest_pending: dt.datetime | None, wake_gate: WakeGate | None
    ) -> None:
        """Copy the counters other parts keep (audio engine, keeper, wake gate); call on the event loop."""
        now = dt.datetime.now(dt.UTC)
        age = (now - oldest_pending).total_seconds() if oldest_pending is not None else 0.0
        self._sampled.families = [
            *_audio_families(audio),
            _gauge("kiosk_broker_pending_ends", "Ended sessions the broker has not confirmed yet.", pending_ends),
            _gauge(
                "kiosk_broker_oldest_pending_end_age_seconds",
                "Age of the oldest session whose end the broker has not confirmed (0 when none).",
                max(0.0, age),
            ),
            *_wake_families(wake_gate),
        ]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _audio_families(health: AudioHealth) -> Iterator[Metric]:
    xruns = CounterMetricFamily(
        "kiosk_audio_xruns", "Audio over- and underruns, by direction and kind.", labels=["direction", "kind"]
    )
    xruns.add_metric(["input", "overflow"], health.input_overflows)
    xruns.add_metric(["output", "underrun"], health.output_underruns)
    yield xruns
    yield CounterMetricFamily(
        "kiosk_audio_output_starved_blocks",
        "Speaker blocks the event loop had not filled in time (played as silence).",
        value=health.output_starved_blocks,
    )
    dropped = CounterMetricFamily(
        "kiosk_audio_dropped_blocks", "Audio blocks dropped because the event loop fell behind.", labels=["path"]
    )
    dropped.add_metric(["input"], health.input_dropped_blocks)
    dropped.add_metric(["reverse"], health.reverse_dropped_blocks)
    yield dropped
    failures = CounterMetricFamily(
        "kiosk_audio_device_failures", "Audio device errors and stalls.", labels=["direction"]
    )
    reopens = CounterMetricFamily(
        "kiosk_audio_device_reopens", "Audio devices reopened after a failure.", labels=["direction"]
    )
    up = GaugeMetricFamily("kiosk_audio_device_up", "1 while the audio device runs.", labels=["direction"])
    for device in (health.input, health.output):
        failures.add_metric([device.direction], device.failures)
        reopens.add_metric([device.direction], device.reopens)
        up.add_metric([device.direction], 1.0 if device.ok else 0.0)
    yield from (failures, reopens, up)
    yield _gauge("kiosk_microphone_muted", "1 while the microphone is muted (trigger.mute_pin).", float(health.muted))
    yield _gauge("kiosk_output_volume", "The output volume, 0 to 1 (volume buttons).", health.output_volume)
    yield _gauge(
        "kiosk_echo_cancellation_enabled",
        "1 while software echo cancellation runs (off for a speakerphone with audio.echo_cancellation = auto).",
        float(health.echo_cancellation),
    )
    if health.cpu is not None:
        cpu = health.cpu
        yield _gauge(
            "kiosk_cpu_short", "1 while the kiosk is short of CPU (throttled by its quota, or late).", cpu.short
        )
        yield CounterMetricFamily(
            "kiosk_cpu_short_episodes", "Times the kiosk became short of CPU.", value=cpu.episodes
        )
        yield CounterMetricFamily(
            "kiosk_cpu_throttled_seconds", "Time the kiosk's cgroup CPU quota throttled it.", value=cpu.throttled_s
        )


def _wake_families(gate: WakeGate | None) -> Iterator[Metric]:
    refused = CounterMetricFamily(
        "kiosk_wake_guard_refusals", "Voice wakes the wake guard refused, by reason.", labels=["reason"]
    )
    for reason in Refusal:
        refused.add_metric([str(reason)], gate.refusals[reason] if gate else 0)
    yield refused
    heard = (gate.admitted + sum(gate.refusals.values())) if gate else 0
    yield CounterMetricFamily("kiosk_voice_wakes", "Voice wakes heard while idle, admitted or refused.", value=heard)
    rest = gate.status(time.monotonic())["resting_s"] if gate else 0.0
    yield _gauge("kiosk_wake_guard_rest_seconds", "How long voice wake still rests after unheard sessions.", rest)
