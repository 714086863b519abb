"""Who holds a device: the running daemon (its control socket answers) or another process (the device is busy)."""

from __future__ import annotations

from pathlib import Path

from kiosk.errors import ControlError

#: What an installer runs to free the devices the daemon holds.
STOP_HINT = (
    "stop it first with `sudo systemctl stop kiosk` (start it again afterwards with `sudo systemctl start kiosk`)"
)
_BUSY_WORDS = ("busy", "in use", "unavailable", "-9985", "-9996")


def daemon_state(socket: Path, *, timeout_s: float = 2.0) -> str | None:
    """The daemon's state (``"idle"``, ``"live"``...) when its control socket at ``socket`` answers, else None."""
    from kiosk.commands.control import request_once

    try:
        if not socket.exists():
            return None
        answer = request_once(socket, {"cmd": "status"}, timeout=timeout_s)
    except (ControlError, OSError):
        return None
    return str(answer.get("state", "running"))


def daemon_message(socket: Path, state: str, what: str) -> str:
    """The message shown when the daemon holds ``what`` (``"the microphone"``, ``"the LED pins"``)."""
    return f"the kiosk daemon is running ({state}; its control socket {socket} answers) and holds {what}: {STOP_HINT}"


def busy_message(exc: BaseException, what: str) -> str | None:
    """A plain explanation when ``exc`` says the device is held by another process, else None."""
    text = f"{type(exc).__name__} {exc}".lower()
    if not any(word in text for word in _BUSY_WORDS):
        return None
    return (
        f"{what} is busy: another process holds it ({exc}). If that is the kiosk daemon, {STOP_HINT}; "
        "otherwise find the process with `sudo fuser -v /dev/snd/* /dev/gpiochip*`"
    )
