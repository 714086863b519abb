"""Lobby Wi-Fi, for real: ``kiosk run`` in a network namespace of its own, its link blacked out or made lossy.

The daemon runs in the namespace of :mod:`tests.fixtures.netlink` (the relay between its TUN device and this
namespace drops, delays and jitters packets on command); the sandbox (room server, broker, scripted agent) and the
test's PulseAudio stay here. Signalling and the broker reach the sandbox through the link (its loopback port is
forwarded over it), media over ICE to the link's own address. Each case is an operator's, with its timings: a 3 s
blackout mid-call, 20, 30 and 60 s blackouts while the agent speaks or while the visitor is silent, a blackout during
the connect, and a whole call on 5 % loss with 80 +/- 40 ms of jitter. Every case ends with no broker session left
open (the sandbox's session list says so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.commands.control import request_once
from tests.fixtures.audio import PulseServer, SpeechClip
from tests.fixtures.daemon import NotifySocket, daemon_config
from tests.fixtures.kiosk_process import DEVICES, KEY_ENV, kiosk_run, wait_until
from tests.fixtures.netlink import NetLink
from tests.fixtures.sandbox import SandboxHandle

pytestmark = [pytest.mark.pulse, pytest.mark.slow]

#: How long the scripted agent's answer to a turn may take to start and finish, on a busy machine (s).
TURN_S = 30.0


@dataclasses.dataclass
class Kiosk:
    """A daemon in the namespace: its control socket, log, the link and the sandbox it talks to."""

    socket: Path
    log: Path
    link: NetLink
    sandbox: SandboxHandle
    pulse: PulseServer
    states: list[str] = dataclasses.field(default_factory=list)
    #: ``time.time()`` when the daemon started: sessions of earlier tests on the same sandbox are not this one's.
    since: float = dataclasses.field(default_factory=time.time)

    def status(self) -> dict[str, Any]:
        """``kiosk status`` (the control socket is a Unix socket: the link does not touch it)."""
        answer: dict[str, Any] = request_once(self.socket, {"cmd": "status"})
        if not self.states or self.states[-1] != answer["state"]:
            self.states.append(answer["state"])
        return answer

    def until(self, condition: Callable[[dict[str, Any]], Any], within: float, what: str) -> dict[str, Any]:
        """Poll the status until ``condition(status)`` holds; returns that status."""

        def check() -> dict[str, Any] | None:
            status = self.status()
            return status if condition(status) else None

        found: dict[str, Any] = wait_until(check, within, what, self.log, more=self.sandbox_log)
        return found

    def sandbox_log(self) -> str:
        """The end of the sandbox's log (the server side of what the daemon saw)."""
        return "sandbox log:\n" + self.sandbox.log_path.read_text(errors="replace")[-4000:]

    def press(self) -> str:
        """A press over the control socket; returns what it did."""
        did: str = request_once(self.socket, {"cmd": "press"})["did"]
        return did

    def live_room(self) -> str:
        """Press and wait until the session is live with the agent listening; returns the room."""
        assert self.press() == "started a session"
        status = self.until(lambda s: s["state"] == "live" and s["agent"] == "listening", 40, "a live session")
        room: str = status["session"]["room"]
        return room

    def heard(self, room: str) -> dict[str, Any]:
        """What the scripted agent heard in ``room``."""
        heard: dict[str, Any] = self.sandbox.session(room)["heard"]
        return heard

    def speak(self, clip: SpeechClip, room: str) -> float:
        """Say ``clip`` into the microphone and wait for the agent's answer; returns the speech it heard of it (s)."""
        before = self.heard(room)
        self.pulse.play_to_end(clip.wav)
        wait_until(
            lambda: self.heard(room)["turns"] > before["turns"],
            TURN_S,
            "the agent to take the turn",
            self.log,
            more=self.sandbox_log,
        )
        return float(self.heard(room)["speech_seconds"] - before["speech_seconds"])

    def black_out(self, during: str, clip: SpeechClip) -> float:
        """Black the link out while the agent speaks (answering ``clip``) or while the visitor is silent; returns the
        monotonic time it began, once the kiosk shows the outage."""
        if during == "agent_speaking":
            self.pulse.play(clip.wav)
            self.until(lambda s: s["agent"] == "speaking", TURN_S, "the agent to speak")
        self.link.blackout(True)
        dark = time.monotonic()
        self.until(lambda s: s["state"] == "reconnecting", 15, "the kiosk to show the outage")
        return dark

    def hold_blackout(self, seconds: float) -> float:
        """Black the link out for ``seconds`` (the case's own timing); returns the monotonic time it came back."""
        self.link.blackout(True)
        time.sleep(seconds)
        self.link.blackout(False)
        return time.monotonic()


@contextlib.contextmanager
def kiosk_in_namespace(
    net_link: NetLink,
    sandbox: SandboxHandle,
    pulse: PulseServer,
    notify: NotifySocket,
    tmp_path: Path,
    *,
    silence_s: float = 8.0,
    session: str = "",
) -> Iterator[Kiosk]:
    """``kiosk run`` in the link's namespace on the test's PulseAudio; ``session``: more ``[session]`` lines."""
    net_link.forward_loopback(int(sandbox.http_url.rsplit(":", 1)[1]))
    config = daemon_config(
        http_url=sandbox.http_url, tmp_path=tmp_path, key_env=KEY_ENV, silence_s=silence_s, extra=DEVICES
    )
    config.write_text(config.read_text().replace("[session]\n", f"[session]\n{session}"))
    log = tmp_path / "daemon.log"
    prefix = tuple(net_link.command([]))
    with kiosk_run(config, sandbox=sandbox, pulse=pulse, notify=notify, log=log, prefix=prefix):
        kiosk = Kiosk(socket=tmp_path / "control.sock", log=log, link=net_link, sandbox=sandbox, pulse=pulse)
        yield kiosk
        net_link.clear()
        output = log.read_text()
        assert sandbox.api_key not in output, "the broker key is in the daemon's log"
        assert "Traceback" not in output, output[-4000:]


def _open_sessions(kiosk: Kiosk) -> list[str]:
    """The broker sessions this kiosk opened that are still open."""
    return [s["room"] for s in kiosk.sandbox.sessions() if s["ended_at"] is None and s["started_at"] >= kiosk.since]


def _ended_by_broker(sandbox: SandboxHandle, room: str) -> float | None:
    """When (``time.time()``) the kiosk's broker end call for ``room`` arrived, if it has (the session may have
    ended before, when its room emptied: a vendor bills until it hears the end)."""
    ended: float | None = sandbox.session(room)["broker_ended_at"]
    return ended


def _last_end(kiosk: Kiosk) -> dict[str, Any] | None:
    end: dict[str, Any] | None = kiosk.status()["last_end"]
    return end


def test_a_3_s_blackout_mid_call_is_ridden_through_and_the_agent_hears_the_visitor_afterwards(
    net_link: NetLink,
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    speech: SpeechClip,
    tmp_path: Path,
) -> None:
    """3 s of blackout while the visitor is silent: the session survives, the agent hears >= 90 % of the visitor's
    next question, asked 1 s after the link is back (against the same question before the blackout), and the session
    ends on silence as usual."""
    with kiosk_in_namespace(net_link, sandbox, pulse_server, notify_socket, tmp_path) as kiosk:
        room = kiosk.live_room()
        before = kiosk.speak(speech, room)
        kiosk.until(lambda s: s["agent"] == "listening", TURN_S, "the agent to listen again")
        kiosk.hold_blackout(3.0)
        time.sleep(1.0)  # the visitor's next question comes a moment after the link is back
        after = kiosk.speak(speech, room)
        end = kiosk.until(lambda s: s["last_end"], 60, "the session's end")["last_end"]
        wait_until(lambda: _ended_by_broker(sandbox, room), 20, "the broker end", kiosk.log, more=kiosk.sandbox_log)
    assert before > 1.0, f"the agent heard only {before:.2f} s of the question before the blackout"
    assert after >= 0.9 * before, f"after the blackout the agent heard {after:.2f} s against {before:.2f} s before"
    assert end["reason"] == "silence" and end["failure"] is None, end
    assert room not in _open_sessions(kiosk)


@pytest.mark.parametrize(
    ("seconds", "during"), [(30.0, "visitor_silent"), (60.0, "agent_speaking"), (60.0, "visitor_silent")]
)
def test_a_long_blackout_ends_as_network_lost_and_the_broker_end_follows_the_link(
    net_link: NetLink,
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    speech: SpeechClip,
    tmp_path: Path,
    seconds: float,
    during: str,
) -> None:
    """30 or 60 s of blackout (while the agent speaks, or while the visitor is silent): the kiosk shows reconnecting,
    ends as network_lost during the outage (not by silence, not 'disconnected'), ends the broker session within 5 s of
    the link's return, and the next press goes live."""
    with kiosk_in_namespace(net_link, sandbox, pulse_server, notify_socket, tmp_path) as kiosk:
        room = kiosk.live_room()
        dark = kiosk.black_out(during, speech)
        end = kiosk.until(lambda s: s["last_end"], seconds - 5.0, "the session's end during the outage")["last_end"]
        assert _ended_by_broker(sandbox, room) is None, "the broker was reached through a blacked out link"
        time.sleep(max(0.0, dark + seconds - time.monotonic()))  # the rest of the outage (the case's timing)
        kiosk.link.blackout(False)
        back = time.time()
        ended = wait_until(
            lambda: _ended_by_broker(sandbox, room),
            30,
            "the broker end after the outage",
            kiosk.log,
            more=kiosk.sandbox_log,
        )
        second = kiosk.live_room()
        assert kiosk.press() == "ended the session"
        kiosk.until(lambda s: s["state"] == "idle", 30, "idle after the second session")
        wait_until(
            lambda: _ended_by_broker(sandbox, second),
            20,
            "the second session's broker end",
            kiosk.log,
            more=kiosk.sandbox_log,
        )
    assert end["failure"] == "network_lost", end
    assert ended - back <= 5.0, f"the broker end came {ended - back:.1f} s after the link returned"
    assert "reconnecting" in kiosk.states
    assert not _open_sessions(kiosk)


@pytest.mark.parametrize("during", ["agent_speaking", "visitor_silent"])
def test_a_20_s_blackout_within_the_installers_bound_is_ridden_through(
    net_link: NetLink,
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    speech: SpeechClip,
    tmp_path: Path,
    during: str,
) -> None:
    """20 s of blackout with ``session.network_lost_s = 30``: reconnecting is shown (not speaking, not ended by
    silence), the same broker session goes on, and the agent hears the visitor's question after the outage."""
    with kiosk_in_namespace(
        net_link, sandbox, pulse_server, notify_socket, tmp_path, session="network_lost_s = 30\n"
    ) as kiosk:
        room = kiosk.live_room()
        dark = kiosk.black_out(during, speech)
        assert kiosk.status()["agent"] is None, "the kiosk shows the agent's state over a dead link"
        time.sleep(max(0.0, dark + 20.0 - time.monotonic()))  # 20 s in all (the case's timing)
        kiosk.link.blackout(False)
        kiosk.until(lambda s: s["state"] == "live", 40, "the room back")
        assert kiosk.status()["session"]["room"] == room, "the outage opened another broker session"
        kiosk.until(lambda s: s["agent"] == "listening", TURN_S, "the agent to listen again")
        heard = kiosk.speak(speech, room)
        assert kiosk.press() == "ended the session"
        kiosk.until(lambda s: s["state"] == "idle", 30, "idle")
        wait_until(lambda: _ended_by_broker(sandbox, room), 20, "the broker end", kiosk.log, more=kiosk.sandbox_log)
    assert heard > 1.0, f"after the outage the agent heard {heard:.2f} s of the question"
    assert "reconnecting" in kiosk.states
    assert len([s for s in sandbox.sessions() if s["room"] == room]) == 1
    assert not _open_sessions(kiosk)


def test_a_blackout_during_the_connect_is_named_and_leaks_nothing(
    net_link: NetLink,
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    tmp_path: Path,
) -> None:
    """The link goes down at the press, for 15 s: the session fails with a named reason, any broker session it opened
    is ended once the link is back, and the next press goes live."""
    with kiosk_in_namespace(net_link, sandbox, pulse_server, notify_socket, tmp_path) as kiosk:
        kiosk.link.blackout(True)
        assert kiosk.press() == "started a session"
        end = kiosk.until(lambda s: s["last_end"], 40, "the session's end")["last_end"]
        time.sleep(5.0)
        kiosk.link.blackout(False)
        kiosk.until(lambda s: s["state"] == "idle", 30, "idle")
        room = kiosk.live_room()
        assert kiosk.press() == "ended the session"
        kiosk.until(lambda s: s["state"] == "idle", 30, "idle after the second session")
        wait_until(
            lambda: not _open_sessions(kiosk), 40, "every broker session ended", kiosk.log, more=kiosk.sandbox_log
        )
    assert end["failure"] in {"broker_timeout", "broker_unreachable", "connect_timeout", "network_lost"}, end
    assert _ended_by_broker(sandbox, room) is not None


def test_a_whole_call_on_5_percent_loss_and_80_ms_jitter_keeps_the_first_words(
    net_link: NetLink,
    sandbox: SandboxHandle,
    pulse_server: PulseServer,
    notify_socket: NotifySocket,
    speech: SpeechClip,
    tmp_path: Path,
) -> None:
    """5 % loss and 80 +/- 40 ms each way for the whole call, the visitor speaking from the press: the pre-connect
    buffer (Opus) arrives within the agent's 3 s, and the agent hears most of the question."""
    with kiosk_in_namespace(net_link, sandbox, pulse_server, notify_socket, tmp_path) as kiosk:
        kiosk.link.impair(loss=0.05, delay_ms=80, jitter_ms=40)
        player = kiosk.pulse.play(speech.wav)
        assert kiosk.press() == "started a session"
        status = kiosk.until(lambda s: s["state"] == "live" and s["session"]["room"], 40, "live")
        room = status["session"]["room"]
        assert player.wait(timeout=60) == 0
        spoken = len(speech.pcm(16000)) / 16000

        def most_of_the_question() -> dict[str, Any] | None:
            # a pause the lossy link stretched may split the question into two turns: count every turn the agent took
            heard = kiosk.heard(room)
            enough = heard["turns"] >= 1 and heard["preconnect_seconds"] + heard["speech_seconds"] >= 0.6 * spoken
            return heard if enough else None

        def what_was_heard() -> str:
            lines = kiosk.sandbox.log_path.read_text(errors="replace").splitlines()
            agent = [line for line in lines if room in line or "pre-connect" in line]
            return f"heard: {kiosk.heard(room)}\nthe sandbox's lines of that room:\n" + "\n".join(agent[-40:])

        heard = wait_until(
            most_of_the_question,
            TURN_S,
            f"the agent to hear 60 % of a {spoken:.2f} s question",
            kiosk.log,
            more=what_was_heard,
        )
        assert kiosk.press() == "ended the session"
        kiosk.until(lambda s: s["state"] == "idle", 30, "idle")
        wait_until(lambda: _ended_by_broker(sandbox, room), 30, "the broker end", kiosk.log, more=kiosk.sandbox_log)
        log = kiosk.log.read_text(errors="replace")
    first_words = "\n".join(
        line
        for line in log.splitlines()
        if any(w in line for w in ("first words", "pre-connect", "subscription", "agent"))
    )
    assert heard["preconnect_rejected"] == "", f"{heard}\nthe kiosk's first-words lines:\n{first_words}"
    assert heard["preconnect_mime_type"] == "audio/ogg;codecs=opus", heard
    assert not _open_sessions(kiosk)
