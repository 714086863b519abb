"""The screen's server on a real 127.0.0.1 port, following a real control socket: page, events, actions, guards."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from kiosk.commands import screen as screen_command
from kiosk.config import KioskConfig
from tests.fixtures.screen import EventStream, running_screen, screen_config
from tests.fixtures.waiting import until

JSON = {"Content-Type": "application/json"}


async def test_page_escapes_the_configured_words_and_takes_the_language(tmp_path: Path) -> None:
    """Kiosk name and welcome text reach the page as text, never markup; ``<html lang>`` is ``screen.language``."""
    config = screen_config(
        tmp_path, name='<b>Lobby & "Co"</b>', welcome="<script>alert(1)</script>Hallo!", language="de-AT"
    )
    async with running_screen(config) as (_, _, url), httpx.AsyncClient(base_url=url, timeout=5) as client:
        page = await client.get("/")
        script = await client.get("/static/screen.js")
        style = await client.get("/static/screen.css")
        missing = await client.get("/static/kiosk.toml")
    assert page.status_code == 200 and '<html lang="de-AT">' in page.text
    assert "&lt;b&gt;Lobby &amp; &quot;Co&quot;&lt;/b&gt;" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;Hallo!" in page.text and "<script>alert" not in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert script.headers["Content-Type"].startswith("text/javascript") and "EventSource" in script.text
    assert "innerHTML" not in script.text, "captions must go in as textContent"
    assert style.status_code == 200 and "@import" not in style.text and "url(" not in style.text
    assert missing.status_code == 404


async def test_events_stream_views_captions_and_resets(tmp_path: Path) -> None:
    """The page hears a snapshot, then each state as a view and each caption; a new session clears the old one's."""
    async with (
        running_screen(screen_config(tmp_path)) as (daemon, _, url),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
        client.stream("GET", "/events") as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = EventStream(response)
        snapshot = await stream.until("snapshot")
        assert snapshot == {
            "view": {"key": "ready", "label": "Ready", "detail": "", "session": None, "in_session": False},
            "captions": [],
        }
        daemon.publish({"type": "state", "state": "connecting", "session": 1})
        assert (await stream.until("view"))["key"] == "connecting"
        daemon.publish({"type": "state", "state": "live", "agent": "listening", "session": 1, "room": "kiosk-r1"})
        listening = await stream.until("view")
        assert listening["key"] == "listening" and "kiosk-r1" not in str(listening)
        for text, final in (("Hello", False), ("Hello there.", True)):
            daemon.publish(
                {"type": "caption", "session": 1, "role": "agent", "text": text, "segment_id": "s1", "final": final}
            )
        assert (await stream.until("caption"))["final"] is False
        assert await stream.until("caption") == {
            "session": 1,
            "role": "agent",
            "text": "Hello there.",
            "segment_id": "s1",
            "final": True,
        }
        daemon.publish({"type": "state", "state": "error", "failure": "broker_unreachable", "session": 1})
        failure = await stream.until("view")
        assert failure["key"] == "failure" and "cannot be reached" in failure["detail"]
        daemon.publish({"type": "state", "state": "idle", "session": 1})
        assert await stream.next() == ("reset", {})
        assert (await stream.until("view"))["key"] == "ready"


async def test_press_and_typed_text_reach_the_daemon_within_bounds(tmp_path: Path) -> None:
    """The button is the control socket's press; typed text is tidied, length-bounded and refused when malformed."""
    async with (
        running_screen(screen_config(tmp_path, max_text_chars=20)) as (daemon, _, url),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        pressed = await client.post("/api/press", json={})
        said = await client.post("/api/say", json={"text": "  Where is\n the lift? "})
        too_long = await client.post("/api/say", json={"text": "x" * 21})
        empty = await client.post("/api/say", json={"text": "   "})
        not_json = await client.post("/api/say", content=b"text=hi", headers={"Content-Type": "text/plain"})
        foreign = await client.post("/api/press", json={}, headers={"Origin": "http://evil.example"})
    assert pressed.json() == {"ok": True, "did": "started a session", "state": "connecting"}
    assert said.json() == {"ok": True, "sent": "Where is the lift?"}
    assert too_long.status_code == 413 and "20 characters" in too_long.json()["error"]
    assert empty.status_code == 400
    assert not_json.status_code == 415
    assert foreign.status_code == 403
    assert daemon.presses == 1 and daemon.said == ["Where is the lift?"]


async def test_text_box_off_refuses_typed_text(tmp_path: Path) -> None:
    """With ``text_input = false`` the page hides the box and the server refuses typed text."""
    async with (
        running_screen(screen_config(tmp_path, text_input=False)) as (daemon, _, url),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        page = await client.get("/")
        refused = await client.post("/api/say", json={"text": "hello"})
    assert 'data-text-input="false"' in page.text
    assert refused.status_code == 403 and "text_input" in refused.json()["error"]
    assert daemon.said == []


async def test_loopback_screen_answers_only_to_loopback_names(tmp_path: Path) -> None:
    """A page bound to 127.0.0.1 refuses other Host names (a DNS-rebinding site cannot drive the kiosk)."""
    async with (
        running_screen(screen_config(tmp_path)) as (daemon, _, url),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        rebound = await client.post("/api/press", json={}, headers={"Host": "evil.example"})
        local = await client.get("/", headers={"Host": "localhost"})
    assert rebound.status_code == 421 and daemon.presses == 0
    assert local.status_code == 200


async def test_access_token_guards_every_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a token: nothing without it; ``?token=`` once moves it into an HTTP-only cookie; Bearer works too."""
    token = "t0ken-for-the-screen-0123456789"
    monkeypatch.setenv("KIOSK_TEST_SCREEN_TOKEN", token)
    config = screen_config(tmp_path, token_env="KIOSK_TEST_SCREEN_TOKEN")
    async with running_screen(config) as (daemon, _, url):
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            bare = await client.get("/")
            events = await client.get("/events")
            wrong = await client.get("/", params={"token": "x" * len(token)})
            press = await client.post("/api/press", json={})
            login = await client.get("/", params={"token": token})
            after = await client.get("/")
        async with httpx.AsyncClient(base_url=url, timeout=5) as other:
            bearer = await other.post("/api/press", json={}, headers={"Authorization": f"Bearer {token}"})
    assert bare.status_code == events.status_code == wrong.status_code == press.status_code == 401
    assert "?token=" in bare.json()["error"] and token not in bare.text
    assert login.status_code == 303 and login.headers["Location"] == "/"
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert after.status_code == 200 and token not in after.text
    assert bearer.status_code == 200 and daemon.presses == 1


async def test_screen_follows_the_daemon_across_a_restart(tmp_path: Path) -> None:
    """The daemon goes away: the page hears "offline" and presses answer 503; it comes back: the page is ready again."""
    async with (
        running_screen(screen_config(tmp_path)) as (daemon, service, url),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
        client.stream("GET", "/events") as response,
    ):
        stream = EventStream(response)
        assert (await stream.until("snapshot"))["view"]["key"] == "ready"
        await daemon.stop()
        assert (await stream.until("view"))["key"] == "offline"
        down = await client.post("/api/press", json={})
        assert down.status_code == 503 and "try again" in down.json()["error"]
        await daemon.start()
        assert (await stream.until("view", within=15))["key"] == "ready"
        assert service.feed.connected.is_set()
        assert (await client.post("/api/press", json={})).status_code == 200


def test_kiosk_screen_refuses_when_turned_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`kiosk screen` with ``[screen] enabled = false`` exits 78 and names the key to set."""
    path = tmp_path / "kiosk.toml"
    path.write_text('[broker]\ndialect = "livekit"\nurl = "http://127.0.0.1:9/token"\n')
    assert screen_command.main(["--config", str(path)]) == 78
    assert "enabled = true" in capsys.readouterr().err


async def test_kiosk_screen_command_serves_until_sigterm(tmp_path: Path) -> None:
    """`kiosk screen --port 0` prints its URL, serves the page from the daemon's socket, and exits 0 on SIGTERM."""
    config: KioskConfig = screen_config(tmp_path)
    path = tmp_path / "kiosk.toml"
    path.write_text(
        f'[device]\nname = "Lobby kiosk"\n[broker]\ndialect = "livekit"\nurl = "http://127.0.0.1:9/token"\n'
        f'[control]\nsocket = "{config.control.socket}"\n[screen]\nenabled = true\n'
    )
    async with running_screen(config) as (daemon, _, _):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kiosk", "screen", "--config", str(path), "--port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
            assert line.startswith("kiosk screen: serving http://127.0.0.1:"), line
            url = line.split()[-1]
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                assert "Lobby kiosk" in (await client.get("/")).text

                async def daemon_seen() -> bool:
                    return bool((await client.get("/healthz")).json()["daemon"])

                await until(daemon_seen, 15, "the screen to see the daemon")
                assert (await client.post("/api/press", json={})).status_code == 200
            assert daemon.presses == 1
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=15)
    assert code == 0
