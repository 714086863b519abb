"""The kiosk against the real agent framework: a ``livekit-agents`` worker dispatched by ``kiosk sandbox --agent
workers``, an ``AgentSession`` whose STT reports what it heard (``agents/echo_worker.py``), and ``kiosk run``
on PulseAudio null sinks, watched through ``kiosk events``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.speech_meter import measure
from tests.fixtures.audio import AUDIO_DIR, PulseServer
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.kiosk_process import KioskProcess, run_kiosk
from tests.fixtures.real_agent import AGENT_NAME, EchoWorker, start_echo_agent, stop_echo_agent
from tests.fixtures.sandbox import SandboxHandle

KEY_ENV = "KIOSK_TEST_BROKER_KEY"
LONG_TEXT = (
    "Good morning. I am looking for the library, and I would like to know when it opens tomorrow, "
    "whether I can bring my own laptop, where the quiet rooms are, and if there is a cafe on the ground floor "
    "where I could wait for a friend who is arriving a little later than me."
)
#: At least this share of the speech spoken from the press must reach the agent's STT (the issue's bar; goal 100 %).
FIRST_WORDS_FLOOR = 0.85
#: The issue's scenario: an agent that joins by itself this long after the press (here: after its room opened).
OUTSIDE_AGENT_JOINS_AFTER_S = 4.5
#: More than this share would mean audio reached the agent twice (buffer and live overlapping).
FIRST_WORDS_CEILING = 1.15


@pytest.fixture(scope="module")
def long_speech() -> Path:
    """About 15 s of espeak-ng speech without long pauses."""
    wav = AUDIO_DIR / "long-speech.wav"
    if not wav.exists():
        subprocess.run(["espeak-ng", "-s", "160", "-w", str(wav), LONG_TEXT], check=True, timeout=60)
    return wav


def _clip(source: Path, seconds: float) -> tuple[Path, float]:
    """The first ``seconds`` of ``source`` at 48 kHz mono, and how much speech it holds (as the fake STT measures)."""
    wav = source.with_name(f"{source.stem}-{seconds:g}s.wav")
    subprocess.run(
        ["sox", str(source), "-r", "48000", "-c", "1", "-b", "16", str(wav), "trim", "0", f"{seconds:g}"],
        check=True,
        timeout=30,
    )
    raw = subprocess.run(
        ["sox", str(wav), "-t", "raw", "-e", "signed", "-b", "16", "-"], check=True, timeout=30, capture_output=True
    ).stdout
    return wav, measure(np.frombuffer(raw, "<i2").astype(np.int16), 48000).speech_s


def _config(dialect: str, sandbox: SandboxHandle, tmp_path: Path) -> Path:
    """A kiosk.toml on the PulseAudio devices; ``self`` mints its own tokens that ask for the agent."""
    audio = '[audio]\ninput_device = "kiosk_pulse_mic"\noutput_device = "kiosk_pulse_spk"\nchimes = false\n'
    path = daemon_config(
        http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=60, extra=audio, agent_join_s=30
    )
    if dialect == "self":
        lyzr = f'dialect = "lyzr"\nurl = "{sandbox.http_url}"\nagent_id = "test-agent"\n'
        own = (
            f'dialect = "self"\nlivekit_url = "{sandbox.ws_url}"\nlivekit_api_key = "{sandbox.livekit_api_key}"\n'
            f'agent_name = "{AGENT_NAME}"\n'
        )
        path.write_text(path.read_text().replace(lyzr, own))
    return path


@pytest.fixture
def start_kiosk(
    workers_sandbox: SandboxHandle,
    echo_worker: EchoWorker,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    tmp_path: Path,
) -> Iterator[Callable[..., KioskProcess]]:
    """Start ``kiosk run`` with the given dialect against a sandbox (the workers sandbox unless given), stopped after."""
    started: list[Any] = []
    started_kiosks: list[KioskProcess] = []

    def echo_log() -> str:
        reports = {p.stem: p.read_text() for p in sorted(echo_worker.reports.glob("*.json"))[-3:]}
        sandbox_log = workers_sandbox.log_path.read_text(errors="replace")[-3000:]
        status = ""
        with contextlib.suppress(Exception):
            status = json.dumps(started_kiosks[-1].status().get("audio"))
        streams = ""
        with contextlib.suppress(Exception):
            streams = pulse_server.pactl("list", "short", "source-outputs") + pulse_server.pactl(
                "list", "short", "sources"
            )
        return (
            f"{echo_worker.log_tail(6000)}\nwhat the agent's STT heard, by room: {reports}\n"
            f"the kiosk's audio now: {status}\nthe sound server's capture streams and sources:\n{streams}\n"
            f"sandbox log:\n{sandbox_log}"
        )

    def summary() -> str:
        reports = {p.stem: p.read_text() for p in sorted(echo_worker.reports.glob("*.json"))[-2:]}
        return (
            f"peak samples parecord heard on mic.monitor while each clip played: {MONITOR_PEAKS[-4:]}\n"
            f"what the agent's STT heard, by room: {reports}"
        )

    def start(dialect: str, sandbox: SandboxHandle = workers_sandbox) -> KioskProcess:
        pulse_server.ensure_real_time()
        secret = sandbox.livekit_api_secret if dialect == "self" else sandbox.api_key
        env = {KEY_ENV: secret, "PULSE_SERVER": pulse_server.env["PULSE_SERVER"]}
        manager = run_kiosk(
            _config(dialect, sandbox, tmp_path), env=env, notify_socket=notify_socket, tmp_path=tmp_path
        )
        kiosk = manager.__enter__()
        kiosk.context = lambda: f"agent log:\n{echo_log()}"
        kiosk.summary = summary
        started.append(manager)
        started_kiosks.append(kiosk)
        return kiosk

    yield start
    for manager in started:
        manager.__exit__(None, None, None)


def _press(kiosk: KioskProcess) -> str:
    """Press the button; return the session's room once the broker gave one."""
    answer = kiosk.request(cmd="press")
    assert answer["ok"] and answer["did"] == "started a session", answer
    room: str = kiosk.wait_for(lambda: (kiosk.status().get("session") or {}).get("room"), 20, "a room")
    return room


#: The peak sample another client of the sound server recorded from ``mic.monitor`` (what the kiosk's capture
#: stream is on) while each clip played: tells a failure of the sound server from one of the kiosk.
MONITOR_PEAKS: list[int] = []


def _speak(pulse_server: PulseServer, wav: Path) -> None:
    """Play ``wav`` into the kiosk's microphone (the ``mic`` sink) to its end, in real time, while ``parecord``
    listens to the source the kiosk records (its peak goes to :data:`MONITOR_PEAKS`)."""
    heard = wav.with_suffix(".monitor.raw")
    recorder = pulse_server.record(heard, source="mic.monitor")
    try:
        pulse_server.play_to_end(wav, "mic")
    finally:
        recorder.terminate()
        recorder.wait(timeout=10)
    samples = np.frombuffer(heard.read_bytes(), "<i2") if heard.exists() else np.zeros(0, np.int16)
    MONITOR_PEAKS.append(int(np.abs(samples.astype(np.int32)).max()) if len(samples) else -1)


def _agent_states(kiosk: KioskProcess) -> list[str]:
    return [e["agent"] for e in list(kiosk.events) if e.get("type") == "state" and e.get("state") == "live"]


def _captions(kiosk: KioskProcess, role: str) -> list[dict[str, Any]]:
    return [e for e in list(kiosk.events) if e.get("type") == "caption" and e.get("role") == role]


def _agent_hears_the_kiosk(kiosk: KioskProcess, worker: EchoWorker, room: str) -> None:
    """Wait until the agent's STT is fed the kiosk's live microphone (its first second of audio arrived).

    ``listening`` comes first: the framework sets it when the session starts, before it has subscribed to the
    microphone and settled the pre-connect buffer; speech in between belongs to the first-words tests.
    """
    kiosk.wait_for(lambda: (worker.report(room) or {}).get("audio_s", 0) > 0, 20, "the agent's STT to get audio")


def _no_traceback(kiosk: KioskProcess) -> None:
    assert "Traceback" not in kiosk.log(), kiosk.log()[-4000:]


def _preconnect_received_s(worker: EchoWorker, room: str) -> float | None:
    """The seconds of pre-connect audio the framework decoded for ``room`` (its ``pre-connect audio received`` debug
    line), or None if it logged none."""
    for line in worker.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if (
                isinstance(record, dict)
                and record.get("room") == room
                and record.get("message") == "pre-connect audio received"
            ):
                return float(record["duration"])
    return None


def _first_words_went_as_opus(kiosk: KioskProcess, worker: EchoWorker, room: str) -> float:
    """The kiosk sent its first words as Ogg Opus and the framework decoded them: the seconds it decoded."""
    sent = [line for line in kiosk.log().splitlines() if "of first words to the agent" in line]
    assert sent and "opus, audio/ogg;codecs=opus" in sent[-1], sent
    decoded = _preconnect_received_s(worker, room)
    assert decoded is not None, f"the framework logged no pre-connect audio for {room}:\n{worker.log_tail()}"
    return decoded


def _report_first_words(kiosk: KioskProcess, heard: Callable[[], float], spoken_s: float) -> None:
    """Give the rest of the speech a moment to reach the STT, then print the figure (``pytest -s`` shows it)."""
    with contextlib.suppress(AssertionError):
        kiosk.wait_for(lambda: heard() >= spoken_s, 3, "the rest of the speech")
    print(f"first words at the agent's STT: {heard():.2f} s of {spoken_s:.2f} s ({heard() / spoken_s:.0%})")


@pytest.mark.parametrize("dialect", ["lyzr", "self"])
def test_the_agent_is_dispatched_and_its_state_drives_the_kiosk(
    dialect: str,
    start_kiosk: Callable[..., KioskProcess],
    echo_worker: EchoWorker,
    workers_sandbox: SandboxHandle,
    pulse_server: PulseServer,
    long_speech: Path,
) -> None:
    """A press opens a session whose room becomes a job for the worker; the agent's lk.agent.state is the kiosk's."""
    echo_worker.set_join_delay(0.0)
    kiosk = start_kiosk(dialect)
    room = _press(kiosk)
    kiosk.wait_for(lambda: "listening" in _agent_states(kiosk), 40, "the agent to listen")
    _agent_hears_the_kiosk(kiosk, echo_worker, room)
    # The pre-connect buffer is sent even when nothing was recorded yet: otherwise the agent waits 3 s for it.
    assert "timeout waiting for pre-connect audio buffer" not in echo_worker.log_messages(room)
    record = workers_sandbox.session(room)
    assert record["dialect"] == dialect and record["agent_name"] == AGENT_NAME
    assert record["agent_job"]["status"] == "JS_RUNNING" and record["agent_job"]["worker_id"].startswith("AW_")
    wav, _ = _clip(long_speech, 2.0)
    before = len(_agent_states(kiosk))
    _speak(pulse_server, wav)
    try:
        kiosk.wait_for(lambda: "thinking" in _agent_states(kiosk)[before:], 20, "the agent to think about the speech")
    except AssertionError:
        # Now and then the framework lets the first utterance after it settled the (empty) pre-connect buffer pass
        # without a turn; a second one must be answered.
        _speak(pulse_server, wav)
        kiosk.wait_for(lambda: "thinking" in _agent_states(kiosk)[before:], 40, "the agent to think about the speech")
    kiosk.wait_for(lambda: "speaking" in _agent_states(kiosk)[before:], 20, "the agent to answer")
    assert kiosk.status()["state"] == "live"
    _no_traceback(kiosk)


@pytest.mark.parametrize("seconds", [2.0, 5.0, 10.0])
def test_speech_from_the_press_reaches_the_agents_stt(
    seconds: float,
    start_kiosk: Callable[..., KioskProcess],
    echo_worker: EchoWorker,
    pulse_server: PulseServer,
    long_speech: Path,
) -> None:
    """Speech spoken from the press, all before the agent listens, reaches its STT whole (buffer, then live)."""
    wav, spoken_s = _clip(long_speech, seconds)
    echo_worker.set_join_delay(seconds + 2.0)
    kiosk = start_kiosk("lyzr")
    room = _press(kiosk)
    _speak(pulse_server, wav)
    kiosk.wait_for(lambda: "listening" in _agent_states(kiosk), seconds + 30, "the agent to listen")

    def heard() -> float:
        report = echo_worker.report(room)
        return float(report["speech_s"]) if report and report["utterances"] else 0.0

    try:
        kiosk.wait_for(lambda: heard() >= FIRST_WORDS_FLOOR * spoken_s, 20, f"the agent to hear {spoken_s:.1f} s")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nagent heard: {echo_worker.report(room)}\n{echo_worker.log_tail()}") from None
    _report_first_words(kiosk, heard, spoken_s)
    assert heard() <= FIRST_WORDS_CEILING * spoken_s, f"heard {heard():.2f} s of {spoken_s:.2f} s: audio twice"
    # Most of the speech was spoken before the agent listened: it came in the Opus buffer, decoded by the framework.
    decoded = _first_words_went_as_opus(kiosk, echo_worker, room)
    print(f"pre-connect buffer decoded by livekit-agents: {decoded:.2f} s")
    assert decoded >= min(seconds, 1.0)
    _no_traceback(kiosk)


def test_captions_of_both_sides_appear_in_kiosk_events(
    start_kiosk: Callable[..., KioskProcess],
    echo_worker: EchoWorker,
    pulse_server: PulseServer,
    long_speech: Path,
) -> None:
    """The agent's transcription of the visitor (interim then final) and its own answer become caption events."""
    echo_worker.set_join_delay(0.0)
    kiosk = start_kiosk("lyzr")
    room = _press(kiosk)
    kiosk.wait_for(lambda: "listening" in _agent_states(kiosk), 40, "the agent to listen")
    _agent_hears_the_kiosk(kiosk, echo_worker, room)
    wav, _ = _clip(long_speech, 2.0)
    _speak(pulse_server, wav)
    visitor = kiosk.wait_event(
        lambda e: e.get("type") == "caption" and e.get("role") == "visitor" and e.get("final") is True,
        20,
        "a final caption of the visitor",
    )
    assert visitor["text"].startswith("heard ") and visitor.get("segment_id")
    answer = kiosk.wait_event(
        lambda e: e.get("type") == "caption" and e.get("role") == "agent" and e.get("final") is True,
        20,
        "the agent's answer as a final caption",
    )
    assert answer["text"].startswith("You said: heard "), answer
    assert any(c.get("final") is False for c in _captions(kiosk, "visitor")), "no interim caption of the visitor"
    _no_traceback(kiosk)


def test_kiosk_say_is_answered(start_kiosk: Callable[..., KioskProcess], echo_worker: EchoWorker) -> None:
    """Typed text from ``kiosk say`` reaches the agent as chat (``lk.chat``) and its answer comes back as a caption."""
    echo_worker.set_join_delay(0.0)
    kiosk = start_kiosk("lyzr")
    room = _press(kiosk)
    kiosk.wait_for(lambda: "listening" in _agent_states(kiosk), 40, "the agent to listen")
    _agent_hears_the_kiosk(kiosk, echo_worker, room)
    kiosk.say("where is the library")
    kiosk.wait_event(
        lambda e: e.get("type") == "caption" and "You said: where is the library" in e.get("text", ""),
        20,
        "the agent's answer to the typed text",
    )
    _no_traceback(kiosk)


def test_an_outside_agent_joining_after_the_press_hears_the_first_words(
    start_kiosk: Callable[..., KioskProcess],
    none_sandbox: SandboxHandle,
    agents_python: Path,
    echo_worker: EchoWorker,
    pulse_server: PulseServer,
    long_speech: Path,
    tmp_path: Path,
) -> None:
    """Under ``--agent none`` an outside agent (``echo_worker.py watch``) joins by itself 4.5 s after the room
    opened: the speech spoken from the press (5 s, most of it before the agent joined) reaches its STT."""
    wav, spoken_s = _clip(long_speech, 5.0)
    args = ["watch", str(OUTSIDE_AGENT_JOINS_AFTER_S)]
    agent = start_echo_agent(agents_python, args, sandbox=none_sandbox, worker=echo_worker, workdir=tmp_path)
    room = ""
    try:
        kiosk = start_kiosk("lyzr", none_sandbox)
        kiosk.wait_for(lambda: "WATCHING ROOMS" in echo_worker.log_tail(100_000), 120, "the outside agent to start")
        room = _press(kiosk)
        _speak(pulse_server, wav)

        def heard() -> float:
            report = echo_worker.report(room)
            return float(report["speech_s"]) if report and report["utterances"] else 0.0

        kiosk.wait_for(lambda: heard() >= FIRST_WORDS_FLOOR * spoken_s, 30, f"the agent to hear {spoken_s:.1f} s")
        _report_first_words(kiosk, heard, spoken_s)
        assert heard() <= FIRST_WORDS_CEILING * spoken_s
        assert kiosk.status()["state"] == "live"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nagent heard: {echo_worker.report(room)}\n{echo_worker.log_tail()}") from None
    finally:
        stop_echo_agent(agent)
    _no_traceback(kiosk)
