"""The daemon's behaviour in this process against the sandbox: control socket, events, reload, watchdog, ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kiosk.commands.control import request_once
from kiosk.daemon.app import run
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.demo.wavio import WavStreamFactory
from tests.fixtures.audio import PulseServer, SpeechClip
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.kiosk_process import DEVICES, kiosk_run, wait_until
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.waiting import until

KEY_ENV = "KIOSK_TEST_BROKER_KEY"


@dataclass
class Daemon:
    """A daemon running in this process, with its config, socket and summaries."""

    task: asyncio.Task[int]
    stop: asyncio.Event
    config: Path
    socket: Path
    audio: WavStreamFactory
    summaries: list[SessionSummary] = field(default_factory=list)

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request."""
        return await asyncio.to_thread(request_once, self.socket, request)

    async def state(self) -> str:
        """The current state."""
        return str((await self.ask({"cmd": "status"}))["state"])

    async def wait_state(self, state: str, within: float = 20.0) -> None:
        """Poll until the daemon is in ``state``."""

        async def reached() -> bool:
            return await self.state() == state

        await until(reached, within, f"state {state}")


@contextlib.asynccontextmanager
async def daemon(
    sandbox: SandboxHandle,
    tmp_path: Path,
    speech: SpeechClip,
    *,
    silence_s: float = 30.0,
    extra: str = "",
    session: str = "",
) -> AsyncIterator[Daemon]:
    """Run the daemon in-process until the block ends, then the shutdown SIGTERM asks for (through ``run``'s stop
    event: a real signal goes to the daemon's own process in the subprocess tests, never to pytest's)."""
    config = daemon_config(
        http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=silence_s, extra=extra
    )
    config.write_text(config.read_text().replace("[session]\n", f"[session]\n{session}", 1))
    audio = WavStreamFactory(mic_wav=speech.wav, speaker_wav=None)
    summaries: list[SessionSummary] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(config, stream_factory=audio, on_summary=summaries.append, configure_logging=False, stop=stop)
    )
    handle = Daemon(
        task=task, stop=stop, config=config, socket=tmp_path / "control.sock", audio=audio, summaries=summaries
    )
    try:
        await until(lambda: handle.socket.exists() or task.done(), 20, "the control socket")
        assert not task.done(), "the daemon exited at start"
        yield handle
    finally:
        stop.set()
        assert await asyncio.wait_for(task, timeout=15) in (0, None)


@pytest.fixture(autouse=True)
def _broker_key(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, sandbox.api_key)


async def test_status_say_and_events(sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip) -> None:
    """While live: status names the room, say reaches the agent (its echo shown once), events stream it all."""
    async with daemon(sandbox, tmp_path, speech) as d:
        reader, writer = await asyncio.open_unix_connection(str(d.socket))
        writer.write(b'{"cmd": "events"}\n')
        await writer.drain()
        refused = await d.ask({"cmd": "say", "text": "too early"})
        assert refused["ok"] is False and "press first" in refused["error"]
        assert (await d.ask({"cmd": "press"}))["did"] == "started a session"
        await d.wait_state("live")
        status = await d.ask({"cmd": "status"})
        assert status["session"]["room"] and status["versions"]["kiosk"]
        assert (await d.ask({"cmd": "say", "text": "Where is the lift?"}))["ok"] is True
        room = status["session"]["room"]
        await sandbox.wait_session(room, lambda r: "Where is the lift?" in r["heard"].get("user_texts", []))
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(15):
            while not any(e.get("type") == "caption" and "You typed: Where is the lift?" in e["text"] for e in events):
                events.append(json.loads(await reader.readline()))
        assert (await d.ask({"cmd": "press"}))["did"] == "ended the session"
        await d.wait_state("idle")
        writer.close()
    states = [e["state"] for e in events if e.get("type") == "state"]
    assert "connecting" in states and "live" in states
    typed = [e for e in events if e.get("type") == "caption" and e["text"] == "Where is the lift?"]
    assert len(typed) == 1 and typed[0]["role"] == "visitor" and typed[0]["final"], "typed text not shown once"
    assert d.summaries[0].end_reason == "control"


def test_sighup_keeps_old_config_when_new_one_is_bad(
    sandbox: SandboxHandle, pulse_server: PulseServer, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    """SIGHUP to ``kiosk run`` with a broken file is refused (logged, READY again) and the daemon carries on; a good
    one is taken."""
    good = daemon_config(http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, extra=DEVICES)
    text = good.read_text()
    log = tmp_path / "daemon.log"
    with kiosk_run(good, sandbox=sandbox, pulse=pulse_server, notify=notify_socket, log=log) as process:
        good.write_text(text + "\n[session]\nbogus = 1\n")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "refusing the new config" in log.read_text(), 20, "the refusal", log)
        assert request_once(tmp_path / "control.sock", {"cmd": "status"})["state"] == "idle"
        good.write_text(text.replace("silence_timeout_s = 3.0", "silence_timeout_s = 7.0"))
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reloaded" in log.read_text(), 20, "the reload", log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert notify_socket.lines().count("RELOADING=1") == 2


async def test_watchdog_stops_when_the_loop_stalls(
    sandbox: SandboxHandle,
    tmp_path: Path,
    speech: SpeechClip,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pings come from the loop: a loop blocked for 1.5 s (seven 0.2 s intervals) sends none meanwhile, and they
    resume after. Counted, not timed: at most a ping already in flight arrives during the block."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    async with daemon(sandbox, tmp_path, speech):
        await until(lambda: len(notify_socket.times_of("WATCHDOG=1")) >= 3, 20, "3 watchdog pings")
        before = len(notify_socket.times_of("WATCHDOG=1"))
        time.sleep(1.5)  # noqa: ASYNC251 - the point: the whole event loop stalls here
        during = len(notify_socket.times_of("WATCHDOG=1")) - before
        await until(
            lambda: len(notify_socket.times_of("WATCHDOG=1")) > before + during, 20, "the watchdog pings to resume"
        )
    assert during <= 1, f"{during} pings arrived while the loop was blocked"


async def test_max_duration_ends_the_session(sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip) -> None:
    """A session reaching session.max_duration_s ends with that reason, and the broker is told."""
    async with daemon(sandbox, tmp_path, speech, silence_s=3.0, session="max_duration_s = 4.0\n") as d:
        d.audio.cue()
        await d.ask({"cmd": "press"})
        await until(lambda: bool(d.summaries), 30, "a session summary")
    [summary] = d.summaries
    assert summary.end_reason == "max_duration"
    record = sandbox.session(summary.room or "")
    assert record["ended_at"] is not None


def _capture_threads() -> int:
    """Native audio-source capture threads alive in this process (Linux thread names)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text())
        except FileNotFoundError:
            continue  # a thread that ended while the list was read
    return sum(1 for name in names if name.startswith("AudioSourceCapt"))


async def test_sessions_leave_no_native_threads_behind(
    sandbox: SandboxHandle, tmp_path: Path, speech: SpeechClip
) -> None:
    """Back-to-back sessions do not accumulate the SDK's per-track capture threads (a kiosk runs thousands)."""
    async with daemon(sandbox, tmp_path, speech) as d:
        baseline = _capture_threads()
        for _ in range(3):
            await d.ask({"cmd": "press"})
            await d.wait_state("live")
            await d.ask({"cmd": "press"})
            await d.wait_state("idle")
        # The SDK ends a track's capture thread after the room is left: wait for it rather than for a guess.
        await until(lambda: _capture_threads() <= baseline, 10, f"the capture threads back to {baseline}", step=0.05)
    assert [s.end_reason for s in d.summaries] == ["control"] * 3
