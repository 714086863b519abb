"""The demo: a sandbox subprocess, a config of its own, the daemon in this process, presses, summaries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx

from kiosk.commands.control import request_once
from kiosk.daemon.sessionrun import SessionSummary
from kiosk.errors import KioskError

if TYPE_CHECKING:
    from kiosk.screen.service import ScreenService

KEY_ENV = "KIOSK_DEMO_BROKER_KEY"
SCREEN_SECTION = '\n[screen]\nenabled = true\nwelcome = "Press Start and ask me anything."\n'


@dataclass(frozen=True)
class SandboxProcess:
    """A running ``kiosk sandbox`` subprocess and what it printed when ready."""

    process: subprocess.Popen[str]
    info: dict[str, Any]

    def stop(self) -> None:
        """Stop it with SIGTERM (SIGKILL after 5 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_sandbox(*, api_key: str, log: IO[str], timeout_s: float = 30.0, agent: str = "scripted") -> SandboxProcess:
    """Start ``python -m kiosk_sandbox --port 0 --agent AGENT`` and wait for its ready line.

    Needs the ``sandbox`` extra (``kiosk demo`` checks it first); the sandbox is imported here, not at the top, so
    the daemon's modules never load it.
    """
    from kiosk_sandbox.ready import parse_ready

    # The key goes through the environment: a command line is visible to every user in ps.
    process = subprocess.Popen(
        [sys.executable, "-m", "kiosk_sandbox", "--host", "127.0.0.1", "--port", "0", "--agent", agent],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "KIOSK_SANDBOX_API_KEY": api_key},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        info = parse_ready(line)
        if info is not None:
            return SandboxProcess(process, info)
    process.kill()
    raise KioskError(f"the sandbox did not start within {timeout_s:.0f} s; see {log.name}")


#: The demo's deadlines for the broker start plus room connect, and for the agent joining (s).
DEMO_DEADLINE_S = 10.0
#: The demo's bound on sending the first words (s): ``session.first_words_timeout_s``'s default.
FIRST_WORDS_S = 5.0


def demo_config(
    *,
    dialect: str,
    info: dict[str, Any],
    workdir: Path,
    silence_s: float,
    log_level: str,
    voice_wake: bool,
    wav_mic: bool = False,
    slow: float = 1.0,
) -> str:
    """The TOML config the demo's daemon runs with.

    ``slow`` stretches the session's deadlines (:data:`DEMO_DEADLINE_S`: the broker start and room connect, the agent
    joining; :data:`FIRST_WORDS_S`: sending the first words) for a machine that runs everything several times slower (an emulated CPU). With a WAV microphone (``wav_mic``) digital-silence detection is off: between its words that microphone gives
    exact zeros, which would be taken for a dead one (``audio.digital_silence_s``).
    """
    if dialect == "self":
        broker = (
            f'dialect = "self"\nlivekit_url = "{info["ws_url"]}"\nlivekit_api_key = "{info["livekit_api_key"]}"\n'
            f'api_key_env = "{KEY_ENV}_SECRET"\nagent_name = "sandbox-agent"\n'
        )
    else:
        path = {"lyzr": "", "oshara": "", "livekit": "/api/token"}[dialect]
        broker = f'dialect = "{dialect}"\nurl = "{info["http_url"]}{path}"\napi_key_env = "{KEY_ENV}"\n'
        broker += 'agent_id = "demo-agent"\n' if dialect in {"lyzr", "oshara"} else 'agent_name = "sandbox-agent"\n'
    return (
        f'[device]\nidentity = "kiosk-demo"\nname = "Demo kiosk"\n\n[broker]\n{broker}\n'
        f"[session]\nsilence_timeout_s = {silence_s}\nagent_join_timeout_s = {DEMO_DEADLINE_S * slow:g}\n"
        f"connect_timeout_s = {DEMO_DEADLINE_S * slow:g}\nfirst_words_timeout_s = {FIRST_WORDS_S * slow:g}\n"
        "error_display_s = 2.0\n\n"
        f"[trigger]\nvoice_wake = {'true' if voice_wake else 'false'}\ncooldown_s = 2.0\n\n"
        f'[control]\nsocket = "{workdir / "control.sock"}"\n\n'
        f'[daemon]\nstate_dir = "{workdir / "state"}"\nlog_level = "{log_level}"\n'
        + ("\n[audio]\ndigital_silence_s = 0\n" if wav_mic else "")
    )


def agent_heard(http_url: str, room: str | None) -> dict[str, Any]:
    """What the sandbox agent recorded for ``room``."""
    if room is None:
        return {}
    try:
        sessions = httpx.get(f"{http_url}/sandbox/sessions", timeout=5).json()["sessions"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    for record in sessions:
        if record.get("room") == room:
            heard: dict[str, Any] = record.get("heard") or {}
            return {**heard, "ended_at_broker": record.get("ended_at") is not None}
    return {}


def print_summary(summary: SessionSummary, heard: dict[str, Any], out: Callable[[str], None]) -> None:
    """Print one session's summary for a person."""
    out(f"\n-- session {summary.number} (room {summary.room or '-'})")
    ptl = f"{summary.press_to_live_ms:.0f} ms" if summary.press_to_live_ms is not None else "never live"
    out(f"   press-to-live:  {ptl}")
    out(f"   duration:       {summary.duration_s:.1f} s, ended by {summary.end_reason}")
    if heard:
        out(
            f"   agent heard:    {heard.get('speech_seconds', 0):.1f} s of speech live, "
            f"{heard.get('preconnect_seconds', 0):.1f} s of first words before it joined, "
            f"{heard.get('turns', 0)} turn(s); recording {heard.get('wav_path', '-')}"
        )
        out(f"   broker session: {'ended' if heard.get('ended_at_broker') else 'still open'}")
    for role, text in summary.transcript:
        out(f"   {role:>7}: {text}")


async def press_when_ready(socket: Path, cue: Callable[[], None] | None, timeout_s: float = 20.0) -> None:
    """Press through the control socket once it answers (cueing the mic WAV at the same instant)."""
    deadline = time.monotonic() + timeout_s
    while not socket.exists():  # noqa: ASYNC240 - a stat of a local path, between 50 ms sleeps
        if time.monotonic() > deadline:
            raise KioskError(f"the daemon did not open {socket} within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)
    if cue is not None:
        cue()
    await asyncio.to_thread(request_once, socket, {"cmd": "press"})


async def start_screen(
    config_path: Path, port: int, cue: Callable[[], None] | None, out: Callable[[str], None]
) -> ScreenService:
    """Serve the visitor's page on 127.0.0.1:``port``; the mic WAV (``cue``) speaks whenever a session starts.

    Raises:
        KioskError: the port is taken.
    """
    from kiosk.configfile import load_config
    from kiosk.screen.service import ScreenService

    def on_event(event: dict[str, Any]) -> None:
        if cue is not None and event.get("type") == "state" and event.get("state") == "connecting":
            cue()

    service = ScreenService(config=load_config(config_path), port=port, on_event=on_event)
    try:
        url = await service.start()
    except OSError as exc:
        raise KioskError(f"the screen cannot listen on 127.0.0.1:{port} ({exc}); pick another --screen-port") from None
    out(f"kiosk demo: the screen is at {url} (open it in a browser; its Start button is the kiosk's button)")
    return service


def keyboard_presses(socket: Path, out: Callable[[str], None]) -> None:
    """Enter on the terminal presses the button (a daemon thread reading stdin; EOF ends it)."""

    def read() -> None:
        for _ in sys.stdin:
            with contextlib.suppress(KioskError, OSError):
                answer = request_once(socket, {"cmd": "press"})
                out(f"   [Enter] {answer.get('did', answer.get('error'))}")

    threading.Thread(target=read, name="keyboard", daemon=True).start()


def new_api_key() -> str:
    """A random broker key for this demo run (kept in this process's environment, never printed)."""
    key = secrets.token_urlsafe(24)
    os.environ[KEY_ENV] = key
    return key
