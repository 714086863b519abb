"""CLI manners: help texts with their defaults, text by default and --json on request, quiet on a closed pipe."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiosk.cli import COMMANDS, main
from kiosk.commands.control import format_event

REPO = Path(__file__).resolve().parents[1]
HELP_ARGS = [[name, "--help"] for name in COMMANDS] + [
    ["test", check, "--help"] for check in ("mic", "speaker", "leds", "button")
]


@pytest.mark.parametrize("argv", HELP_ARGS, ids=[" ".join(a[:-1]) for a in HELP_ARGS])
def test_help_texts_read_as_sentences(argv: list[str], capsys: Any) -> None:
    """Every --help starts with a sentence (no ``kiosk xxx``: markup) and shows the defaults that exist."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert not description.startswith("``") and "``" not in out
    assert description[0].isupper(), description
    assert "(default: None)" not in out and "(default: False)" not in out


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["sandbox", "--help"], "(default: 127.0.0.1)"),
        (["demo", "--help"], "(default: lyzr)"),
        (["test", "mic", "--help"], "(default: 10.0)"),
        (["test", "speaker", "--help"], "(default: 440.0)"),
        (["test", "button", "--help"], "(default: 30.0)"),
    ],
)
def test_defaults_in_help(argv: list[str], shown: str, capsys: Any) -> None:
    """Options with a default say it in --help."""
    with pytest.raises(SystemExit):
        main(argv)
    assert shown in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv", [["-h"], ["check-config", "--help"], ["test", "mic", "--help"]])
def test_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """A reader that is already gone (``kiosk -h | head -0``): nothing on stderr (no traceback), no error exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kiosk", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert err == b""
    # 141 (128 + SIGPIPE) where kiosk prints; argparse's own --help output ignores the closed pipe and exits 0.
    assert process.returncode in {0, 141}


#: Runs the ``kiosk`` entry point (kiosk.cli:main) with argv[2:] in an interpreter where module argv[1] is absent.
WITHOUT_MODULE = "import sys; sys.modules[sys.argv[1]] = None; from kiosk.cli import main; sys.exit(main(sys.argv[2:]))"


@pytest.mark.parametrize("missing", ["kiosk_sandbox", "aiortc"])
@pytest.mark.parametrize("argv", [["sandbox", "--port", "0"], ["demo", "--sessions", "1"]], ids=["sandbox", "demo"])
def test_sandbox_commands_name_the_extra_when_the_sandbox_is_missing(argv: list[str], missing: str) -> None:
    """Without the sandbox package or its extra's aiortc, ``kiosk sandbox`` / ``kiosk demo`` print one line naming the
    extra and its install command, and exit 1 without a traceback."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_MODULE, missing, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"kiosk {argv[0]} needs the sandbox extra ({missing} is not installed): "
        "in the kiosk checkout run .venv/bin/pip install -e '.[sandbox]'\n"
    )


def test_events_read_as_text() -> None:
    """``kiosk events`` prints people's lines; --json keeps the daemon's objects."""
    assert format_event({"type": "state", "state": "live", "session": 3, "agent": "listening"}) == (
        "state  live  (session #3, agent listening)"
    )
    assert format_event({"type": "transcript", "role": "agent", "text": "Hello"}) == "  agent: Hello"
    assert "FAILED" in format_event({"type": "audio", "direction": "input", "ok": False, "message": "gone"})
    assert json.loads(format_event({"type": "other", "x": 1})) == {"type": "other", "x": 1}


def test_devices_json(capsys: Any) -> None:
    """``kiosk devices --json`` lists the devices a factory reports, with the defaults."""
    from kiosk.audio.fake import FakeStreamFactory
    from kiosk.commands import devices

    assert devices.main(["--json"], factory=FakeStreamFactory()) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"devices", "default_input", "default_output"} <= set(data)
    assert all("name" in d and "default_samplerate" in d for d in data["devices"])


def test_status_rounds_levels() -> None:
    """Levels in ``kiosk status`` read as people say them: -95 dBFS, not -95.21809387207031."""
    from kiosk.commands.control import format_status

    text = format_status({"state": "idle", "audio": {"noise_floor_dbfs": -95.21809387207031, "ok": True}})
    assert "noise floor -95 dBFS" in text and "-95.218" not in text


async def test_press_and_say_print_text_and_json_on_request(tmp_path: Path, capsys: Any) -> None:
    """``kiosk press`` and ``kiosk say`` answer in words; ``--json`` gives the daemon's object."""
    from kiosk.commands import control
    from kiosk.daemon.control_socket import ControlServer, EventBus

    class Daemon:
        def status(self) -> dict[str, Any]:
            return {"state": "idle"}

        def press(self) -> dict[str, Any]:
            return {"state": "connecting", "did": "started a session"}

        async def say(self, text: str) -> dict[str, Any]:
            return {"sent": text}

    server = ControlServer(path=tmp_path / "c.sock", mode=0o600, controller=Daemon(), events=EventBus())
    await server.start()
    sock = str(tmp_path / "c.sock")
    try:
        for argv in (["press", "--socket", sock], ["say", "--socket", sock, "hello", "there"]):
            assert await asyncio.wait_for(asyncio.to_thread(control.main, argv), 10) == 0
        assert await asyncio.wait_for(asyncio.to_thread(control.main, ["press", "--socket", sock, "--json"]), 10) == 0
    finally:
        await server.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "started a session (state now connecting)"
    assert lines[1] == "sent: hello there"
    assert json.loads(lines[2]) == {"ok": True, "state": "connecting", "did": "started a session"}
