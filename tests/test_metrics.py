"""Prometheus metrics: scraped over HTTP and read from the textfile after a real session against the sandbox."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from kiosk import session as sm
from kiosk.audio import AudioHealth, DeviceHealth
from kiosk.commands.control import format_status, request_once
from kiosk.config import MetricsConfig, TriggerConfig, parse_listen
from kiosk.daemon.app import run
from kiosk.daemon.metrics import KioskMetrics
from kiosk.daemon.metrics_export import MetricsExporter
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.demo.wavio import WavStreamFactory
from kiosk.reasons import FailureReason
from kiosk.wakeguard import Refusal, WakeGate
from tests.fixtures.audio import SpeechClip
from tests.fixtures.daemon import daemon_config
from tests.fixtures.metrics import Samples, parse, value
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until

KEY_ENV = "KIOSK_TEST_BROKER_KEY"


def _check_one_session(samples: Samples) -> None:
    assert value(samples, "kiosk_sessions_started_total", trigger="control") == 1
    assert value(samples, "kiosk_sessions_started_total", trigger="voice") == 0
    assert value(samples, "kiosk_sessions_ended_total", reason="silence") == 1
    assert value(samples, "kiosk_session_failures_total", reason="broker_timeout") == 0
    assert value(samples, "kiosk_press_to_live_seconds_count") == 1
    assert 0 < value(samples, "kiosk_press_to_live_seconds_sum") < 20
    assert value(samples, "kiosk_first_words_kept_seconds_count") == 1
    assert value(samples, "kiosk_agent_join_seconds_count") == 1
    assert value(samples, "kiosk_session_duration_seconds_count") == 1
    assert value(samples, "kiosk_in_session_seconds_total") >= value(samples, "kiosk_session_duration_seconds_sum")
    assert value(samples, "kiosk_broker_request_duration_seconds_count", operation="start", outcome="ok") == 1
    assert value(samples, "kiosk_broker_request_duration_seconds_count", operation="end", outcome="ok") == 1
    assert value(samples, "kiosk_broker_pending_ends") == 0
    assert value(samples, "kiosk_audio_device_up", direction="input") == 1
    assert value(samples, "kiosk_audio_xruns_total", direction="input", kind="overflow") >= 0
    assert value(samples, "kiosk_wake_guard_refusals_total", reason="backoff") == 0
    assert value(samples, "kiosk_voice_wakes_total") == 0
    [build] = [labels for name, labels in samples if name == "kiosk_build_info"]
    assert dict(build)["version"]


async def test_a_session_is_counted_over_http_and_in_the_textfile(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one pressed session ended by silence, the scrape and the .prom file both parse and count it."""
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)
    textfile = tmp_path / "kiosk.prom"
    extra = f'[metrics]\nlisten = "127.0.0.1:0"\ntextfile = "{textfile}"\ntextfile_interval_s = 1\n'
    config = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=2.0, extra=extra)
    control = tmp_path / "control.sock"
    audio = WavStreamFactory(mic_wav=speech.wav, speaker_wav=None)
    done, stop = asyncio.Event(), asyncio.Event()
    summaries: list[SessionSummary] = []

    def summarised(summary: SessionSummary) -> None:
        summaries.append(summary)
        done.set()

    daemon = asyncio.create_task(
        run(config, stream_factory=audio, on_summary=summarised, configure_logging=False, stop=stop)
    )
    try:
        await until(lambda: control.exists() or daemon.done(), 20, "the control socket")
        status = await asyncio.to_thread(request_once, control, {"cmd": "status"})
        url = status["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        before = parse((await asyncio.to_thread(httpx.get, url, timeout=10)).text)
        assert value(before, "kiosk_sessions_started_total", trigger="control") == 0
        assert value(before, "kiosk_state", kiosk_state="idle") == 1
        audio.cue()
        await asyncio.to_thread(request_once, control, {"cmd": "press"})
        await asyncio.wait_for(done.wait(), timeout=60)
        answer = await asyncio.to_thread(httpx.get, url, timeout=10)
        after = await asyncio.to_thread(request_once, control, {"cmd": "status"})
    finally:
        stop.set()
        code = await asyncio.wait_for(daemon, timeout=30)
    assert code == 0
    assert answer.headers["content-type"].startswith("text/plain")
    [summary] = summaries
    assert summary.end_reason == "silence"
    _check_one_session(parse(answer.text))
    # the visitor's question was answered: its turns are timed, the same in status and in the histogram
    # (tests/test_turns.py times one question exactly)
    turns = after["turn_latency"]
    assert turns["turns"] >= 1 and value(parse(answer.text), "kiosk_turn_latency_seconds_count") == turns["turns"]
    [last] = after["recent"]
    assert last["trigger"] == "control" and last["end_reason"] == "silence"
    assert "silence: nobody spoke for the silence timeout" in format_status(after)
    _check_one_session(parse(textfile.read_text()))
    leftovers = await asyncio.to_thread(lambda: list(tmp_path.glob("kiosk.prom.*")))
    assert not leftovers, "a temporary file was left beside the textfile"


def _health(*, overflows: int = 0, reopens: int = 0, up: bool = True) -> AudioHealth:
    def device(direction: str) -> DeviceHealth:
        return DeviceHealth(direction, "dev", up, 48000, 1, 0.01, 100, reopens, reopens, None)

    return AudioHealth(device("input"), device("output"), overflows, 0, 0, 0, 0, 0, 0, False, -60.0)


def test_failures_ends_and_samples_are_counted_by_reason() -> None:
    """A broker timeout counts once as a failure and once as an end by failure; sampled counters follow their source."""
    metrics = KioskMetrics(versions={"version": "t"})
    snap = sm.Snapshot()
    for event in (sm.Wake(), sm.Failure(FailureReason.BROKER_TIMEOUT), sm.Ended(), sm.ErrorElapsed()):
        new, _ = sm.transition(snap, event)
        metrics.changed(snap, new)
        snap = new
    idle, _ = sm.transition(snap, sm.Failure(FailureReason.AUDIO_DEVICE))  # between sessions
    metrics.changed(snap, idle)
    gate = WakeGate(config=TriggerConfig(voice_wake=True))
    gate.admit(0.0, level_dbfs=-80.0)
    metrics.sample(audio=_health(overflows=3, reopens=2, up=False), pending_ends=1, oldest_pending=None, wake_gate=gate)
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "kiosk_sessions_started_total", trigger="voice") == 1
    assert value(samples, "kiosk_session_failures_total", reason="broker_timeout") == 1
    assert value(samples, "kiosk_session_failures_total", reason="audio_device") == 1
    assert value(samples, "kiosk_sessions_ended_total", reason="failure") == 1
    assert value(samples, "kiosk_audio_xruns_total", direction="input", kind="overflow") == 3
    assert value(samples, "kiosk_audio_device_reopens_total", direction="output") == 2
    assert value(samples, "kiosk_audio_device_up", direction="input") == 0
    assert value(samples, "kiosk_broker_pending_ends") == 1
    assert value(samples, "kiosk_wake_guard_refusals_total", reason=str(Refusal.TOO_QUIET)) == 1
    assert value(samples, "kiosk_voice_wakes_total") == 1
    assert value(samples, "kiosk_state", kiosk_state="error") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9101", ("127.0.0.1", 9101)),
        (":9101", ("127.0.0.1", 9101)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9", ("::1", 9)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    """A bare port means loopback; any other address is written out."""
    assert parse_listen(text) == expected


def test_bad_metrics_settings_say_what_is_expected() -> None:
    """A port out of range and a textfile the collector would ignore are refused with the fix."""
    with pytest.raises(ValueError, match="port must be a number from 0 to 65535"):
        MetricsConfig(listen="127.0.0.1:99999")
    with pytest.raises(ValueError, match=r"must end in \.prom"):
        MetricsConfig(textfile=Path("/tmp/kiosk.txt"))


async def test_a_busy_port_is_logged_and_the_kiosk_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """metrics.listen on a port in use: an error naming the key, no endpoint, and the textfile is still written."""
    metrics = KioskMetrics(versions={"version": "t"})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = MetricsConfig(listen=f"127.0.0.1:{port}", textfile=tmp_path / "k.prom")
        exporter = MetricsExporter(config=config, registry=metrics.registry, refresh=lambda: None)
        await exporter.start()
        await exporter.close()
    assert exporter.address is None
    assert "pick a free port in metrics.listen" in caplog.text
    text = await asyncio.to_thread((tmp_path / "k.prom").read_text)
    assert value(parse(text), "kiosk_sessions_started_total", trigger="button") == 0


def test_reconnects_are_counted_and_timed() -> None:
    """Each drop counts once in kiosk_reconnects_total; its length, back or ended, goes to kiosk_reconnect_seconds;
    kiosk_state names the reconnecting state."""
    metrics = KioskMetrics(versions={"kiosk": "test"})
    live = sm.Snapshot(state=sm.State.LIVE, session=1)
    down = sm.Snapshot(state=sm.State.RECONNECTING, session=1)
    ending = sm.Snapshot(state=sm.State.ENDING, session=1, failure=FailureReason.NETWORK_LOST)
    metrics.changed(live, down)
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "kiosk_state", kiosk_state="reconnecting") == 1
    metrics.changed(down, live)
    metrics.changed(live, down)
    metrics.changed(down, ending)
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "kiosk_reconnects_total") == 2
    assert value(samples, "kiosk_reconnect_seconds_count") == 2
    assert value(samples, "kiosk_session_failures_total", reason="network_lost") == 1
