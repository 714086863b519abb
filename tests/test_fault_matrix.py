"""The fault matrix: one table of faults, each through ``kiosk run`` as systemd runs it.

One daemon (PulseAudio devices, a real ``NOTIFY_SOCKET``, ``kiosk events`` attached) serves every broker, room,
clock and control-socket case in turn, in front of a scriptable broker (:mod:`tests.fixtures.matrixbroker`) that
passes real starts and ends on to the sandbox. Each session case asserts the named reason, the state sequence the
daemon published, the broker end of every session the broker opened, the return to idle, and that the broker key
appears nowhere in what the daemon logged meanwhile. Config cases go through ``kiosk run``'s own loader; process,
state-directory, audio and GPIO cases live in :mod:`tests.test_fault_matrix_process`. docs/development.md: "The fault matrix".
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import signal
import socket as sockets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from tests.fixtures.audio import PulseServer
from tests.fixtures.daemon import daemon_config, listening_notify_socket
from tests.fixtures.kiosk_process import DEVICES, KEY_ENV, KioskProcess, run_kiosk
from tests.fixtures.matrixbroker import Fault, MatrixBroker, serving
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.pulse

#: The broker group's connect deadline: 5xx retries stop there, stalls and trickles go past it.
BROKER_CONNECT_S = 3.5
#: Cases that go live get a deadline a loaded machine keeps.
LIVE_CONNECT_S = 10.0
PRE_LIVE = ("connecting", "ending", "error", "idle")
LIVE_THEN_ENDED = ("connecting", "live", "ending", "idle")


@dataclass
class Matrix:
    """The shared daemon and broker of this module."""

    kiosk: KioskProcess
    broker: MatrixBroker
    sandbox: SandboxHandle
    pulse: PulseServer
    config: Path


@pytest.fixture(scope="module")
def matrix(
    sandbox: SandboxHandle, pulse_server: PulseServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Matrix]:
    """One ``kiosk run`` for the whole table, 3.5 s to connect (5xx retries stop there), errors shown for 1 s."""
    tmp_path = tmp_path_factory.mktemp("matrix")
    with serving(sandbox.http_url) as broker, listening_notify_socket(tmp_path / "notify.sock") as notify:
        config = daemon_config(
            http_url=broker.url,
            tmp_path=tmp_path,
            key_env=KEY_ENV,
            extra=DEVICES.replace("[audio]\n", "[audio]\nstall_timeout_s = 10.0\n"),
            silence_s=60,
            connect_timeout_s=BROKER_CONNECT_S,
        )
        env = {KEY_ENV: sandbox.api_key, "PULSE_SERVER": pulse_server.env["PULSE_SERVER"]}
        with run_kiosk(config, env=env, notify_socket=notify, tmp_path=tmp_path) as kiosk:
            yield Matrix(kiosk=kiosk, broker=broker, sandbox=sandbox, pulse=pulse_server, config=config)
    # The audio cases moved streams between devices: later modules get a fresh sound server.
    pulse_server.restart()


def states_since(kiosk: KioskProcess, mark: int) -> tuple[str, ...]:
    """The states published since event ``mark``, repeats folded."""
    out: list[str] = []
    for event in list(kiosk.events)[mark:]:
        if event.get("type") == "state" and (not out or out[-1] != event["state"]):
            out.append(event["state"])
    return tuple(out)


def session_case(
    m: Matrix,
    fault: Fault,
    *,
    end_by_press: bool = False,
    ended: str | None = None,
    while_live: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Press under ``fault``; wait for the return to idle; check broker ends and secrets; return last_end, states.

    Every room the broker opened must be ended at the broker, or ``ended`` when the broker named another room.
    """
    kiosk, broker = m.kiosk, m.broker
    kiosk.wait_for(lambda: kiosk.status()["state"] == "idle", 30, "idle before the case")
    broker.fault = fault
    mark, log_mark, opened = len(kiosk.events), len(kiosk.log()), len(broker.opened)
    assert kiosk.request(cmd="press")["did"] == "started a session"
    if end_by_press:
        kiosk.wait_for(lambda: "live" in states_since(kiosk, mark), 30, "live")
        try:
            if while_live is not None:
                while_live()
        finally:
            kiosk.request(cmd="press")  # the next case starts from idle even if this one failed
    kiosk.wait_for(lambda: states_since(kiosk, mark)[-1:] == ("idle",), 40, "the return to idle")
    assert kiosk.status()["state"] == "idle"
    for room in [ended] if ended is not None else broker.opened[opened:]:
        kiosk.wait_for(lambda room=room: room in broker.ends, 20, f"the broker end of {room}")
        if ended is None:
            record = m.sandbox.session(room)
            assert record["ended_at"] is not None and record["end_reason"] == "broker_end", record
    assert m.sandbox.api_key not in kiosk.log()[log_mark:], "the broker key leaked into the log"
    return kiosk.status()["last_end"], states_since(kiosk, mark)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _with(**changes: Any) -> Any:
    return lambda data: {**data, **changes}


def _token(m: Matrix, room: str, *, ttl_s: float) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    token = api.AccessToken(m.sandbox.livekit_api_key, m.sandbox.livekit_api_secret).with_grants(grants)
    return token.with_identity("kiosk-test").with_ttl(dt.timedelta(seconds=ttl_s)).to_jwt()


#: A room server that accepts connections and never answers them (the kernel completes the TCP handshakes).
_SILENT = sockets.create_server(("127.0.0.1", 0), backlog=64)
atexit.register(_SILENT.close)
SILENT_PORT = _SILENT.getsockname()[1]
KEY_ECHO = "__KEY__"  # replaced by the broker key: brokers that echo the key back must not get it logged
# (id, fault, failure reason)
BROKER_CASES: list[tuple[str, Fault, str]] = [
    *[
        (f"http-{code}", Fault(status=code, body=_json({"error": f"refused {KEY_ECHO}"})), reason)
        for code, reason in [
            (400, "broker_rejected"),
            (401, "broker_unauthorized"),
            (403, "broker_unauthorized"),
            (404, "broker_rejected"),
            (405, "broker_rejected"),
            (409, "broker_rejected"),
            (410, "broker_rejected"),
            (413, "broker_rejected"),
            (415, "broker_rejected"),
            (422, "broker_rejected"),
            (429, "broker_rejected"),
            (500, "broker_error"),
            (501, "broker_error"),
            (502, "broker_error"),
            (503, "broker_error"),
            (504, "broker_error"),
        ]
    ],
    *[
        (f"redirect-{code}", Fault(status=code, headers=(("Location", "http://127.0.0.1:9/x"),)), "broker_rejected")
        for code in (301, 302, 307, 308)
    ],
    ("429-retry-after", Fault(status=429, headers=(("Retry-After", "30"),)), "broker_rejected"),
    ("503-retry-after", Fault(status=503, headers=(("Retry-After", "1"),)), "broker_error"),
    ("not-json", Fault(body=b"<html>Service Unavailable</html>"), "broker_malformed"),
    ("empty-body", Fault(body=b""), "broker_malformed"),
    ("truncated-json", Fault(body=b'{"userToken": "abc'), "broker_malformed"),
    ("json-array", Fault(body=b"[]"), "broker_malformed"),
    ("json-null", Fault(body=b"null"), "broker_malformed"),
    ("json-string", Fault(body=b'"ok"'), "broker_malformed"),
    ("empty-object", Fault(body=b"{}"), "broker_malformed"),
    ("token-missing", Fault(body=_json({"livekitUrl": "ws://127.0.0.1:9", "roomName": "r"})), "broker_malformed"),
    (
        "token-not-jwt",
        Fault(body=_json({"userToken": "x", "livekitUrl": "ws://127.0.0.1:9", "roomName": "r"})),
        "broker_malformed",
    ),
    (
        "token-number",
        Fault(body=_json({"userToken": 7, "livekitUrl": "ws://127.0.0.1:9", "roomName": "r"})),
        "broker_malformed",
    ),
    ("late-and-malformed", Fault(delay_s=4.5), "broker_timeout"),  # given up at the deadline, read on
    ("die-before-headers", Fault(die="before_headers"), "broker_unreachable"),
    ("die-mid-body", Fault(body=_json({"userToken": "abc"}), die="mid_body"), "broker_unreachable"),
    ("stall-opened", Fault(forward=True, delay_s=4.5), "broker_timeout"),
    ("trickle-opened", Fault(forward=True, trickle_s=4.5), "broker_timeout"),
    (
        "url-missing",
        Fault(forward=True, mutate=lambda d: {k: v for k, v in d.items() if k != "livekitUrl"}),
        "broker_malformed",
    ),
    ("url-not-websocket", Fault(forward=True, mutate=_with(livekitUrl="ftp://127.0.0.1:9")), "broker_malformed"),
    ("url-plain-remote", Fault(forward=True, mutate=_with(livekitUrl="ws://livekit.example.com")), "broker_malformed"),
    ("room-differs", Fault(forward=True, mutate=_with(roomName="some-other-room")), "broker_malformed"),
    (
        "token-garbled",
        Fault(forward=True, mutate=lambda d: {**d, "userToken": d["userToken"][:-6] + "AAAAAA"}),
        "connect_failed",
    ),
    ("server-gone", Fault(forward=True, mutate=_with(livekitUrl="ws://127.0.0.1:9")), "connect_failed"),
    ("server-silent", Fault(forward=True, mutate=_with(livekitUrl=f"ws://127.0.0.1:{SILENT_PORT}")), "connect_timeout"),
]


@pytest.mark.parametrize(("fault", "reason"), [c[1:] for c in BROKER_CASES], ids=[c[0] for c in BROKER_CASES])
def test_broker_and_room_faults(matrix: Matrix, fault: Fault, reason: str) -> None:
    """A start that fails is named, shown, ended at the broker if it opened a session, and the kiosk is idle."""
    # Lies are answered at once and then joined: they get the deadline a loaded machine keeps, but a silent room
    # server would hold every case that long.
    probe = {"roomName": None, "userToken": "", "livekitUrl": ""}
    lie = fault.mutate(probe) if fault.mutate is not None else {}
    lies = fault.forward and not (fault.delay_s or fault.trickle_s)
    silent = str(SILENT_PORT) in str(lie.get("livekitUrl"))
    set_connect_timeout(matrix, LIVE_CONNECT_S if lies and not silent else BROKER_CONNECT_S)
    if fault.body is not None and KEY_ECHO.encode() in fault.body:
        fault = Fault(
            **{**fault.__dict__, "body": fault.body.replace(KEY_ECHO.encode(), matrix.sandbox.api_key.encode())}
        )
    # A lie about the room: the kiosk can only end the room the broker named.
    last_end, states = session_case(matrix, fault, ended=lie.get("roomName"))
    assert last_end["failure"] == reason, matrix.kiosk.log()[-3000:]
    assert states == PRE_LIVE


CLOCK_CASES = ["token-expired-locally", "token-not-yet-valid", "date-header-2h-off", "date-header-3min-off"]


@pytest.mark.parametrize("case", CLOCK_CASES)
def test_clock_faults(matrix: Matrix, case: str) -> None:
    """The kiosk never refuses a token on its own clock: it tries it; a refused one with a clock problem is
    ``clock``; a broker whose Date disagrees does not stop a good token."""
    set_connect_timeout(matrix, LIVE_CONNECT_S)
    if case.startswith("date-header"):
        off = dt.timedelta(hours=2) if "2h" in case else dt.timedelta(minutes=3)
        date = (dt.datetime.now(dt.UTC) + off).strftime("%a, %d %b %Y %H:%M:%S GMT")
        last_end, states = session_case(matrix, Fault(forward=True, headers=(("Date", date),)), end_by_press=True)
        assert last_end["reason"] == "control" and states == LIVE_THEN_ENDED
        return
    ttl = -3600 if case == "token-expired-locally" else 3600

    def lie(data: dict[str, Any]) -> dict[str, Any]:
        token = _token(matrix, data["roomName"], ttl_s=ttl)
        if case == "token-not-yet-valid":
            # Signed for a clock two hours ahead: valid from then on (nbf), so refused by a server on time.
            payload = api.AccessToken(matrix.sandbox.livekit_api_key, matrix.sandbox.livekit_api_secret)
            token = (
                payload.with_identity("kiosk-test")
                .with_grants(api.VideoGrants(room_join=True, room=data["roomName"]))
                .to_jwt()
            )
            token = _future(token, matrix)
        return {**data, "userToken": token}

    last_end, states = session_case(matrix, Fault(forward=True, mutate=lie))
    assert last_end["failure"] == "clock", matrix.kiosk.log()[-3000:]
    assert states == PRE_LIVE


def _future(token: str, m: Matrix) -> str:
    """The same claims re-signed with ``nbf`` and ``iat`` two hours ahead."""
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    ahead = 7200
    claims.update(nbf=claims["nbf"] + ahead, iat=claims.get("iat", claims["nbf"]) + ahead, exp=claims["exp"] + ahead)
    return jwt.encode(claims, m.sandbox.livekit_api_secret, algorithm="HS256")


def _move_mic(m: Matrix) -> None:
    ours = m.kiosk.wait_for(lambda: _streams_of(m.pulse, m.kiosk.process.pid).get("source_output"), 20, "the stream")
    m.pulse.pactl("move-source-output", ours, "spk.monitor")


def _unplug_mic_briefly(m: Matrix) -> None:
    m.pulse.unload_sink("mic")  # PulseAudio moves the capture to spk.monitor; the kiosk cannot reopen the mic...
    m.kiosk.wait_for(lambda: not m.kiosk.status()["audio"]["input"]["ok"], 20, "the input noticed as down")
    m.pulse.load_sink("mic")  # ...until it is back, within the observers' grace


AUDIO_CASES: list[tuple[str, Callable[[Matrix], None], bool]] = [
    ("mic-moved-to-speaker-monitor-while-live", _move_mic, True),
    ("mic-unplugged-briefly-while-live", _unplug_mic_briefly, True),
    ("mic-moved-to-speaker-monitor-while-idle", _move_mic, False),
]


@pytest.mark.parametrize(("fault", "live"), [c[1:] for c in AUDIO_CASES], ids=[c[0] for c in AUDIO_CASES])
def test_audio_faults(matrix: Matrix, fault: Callable[[Matrix], None], live: bool) -> None:
    """The sound server moves the capture stream, or the mic vanishes for a moment: the kiosk reopens the configured
    device on its own source, and a session goes on (a device that stays away ends it as audio_device:
    tests/test_deafness.py, tests/test_faults.py)."""
    kiosk = matrix.kiosk
    set_connect_timeout(matrix, LIVE_CONNECT_S)
    kiosk.wait_for(lambda: kiosk.status()["state"] == "idle", 30, "idle before the case")
    reopens = kiosk.status()["audio"]["input"]["reopens"]

    def inject() -> None:
        fault(matrix)
        kiosk.wait_for(
            lambda: kiosk.status()["audio"]["input"]["reopens"] > reopens and kiosk.status()["audio"]["ok"],
            30,
            "the input reopened",
        )
        if live:
            assert kiosk.status()["state"] == "live"  # while idle, the fault shows as an error until reopened

    try:
        if not live:
            inject()
        last_end, states = session_case(
            matrix, Fault(forward=True), end_by_press=True, while_live=inject if live else None
        )
    finally:
        if "mic" not in matrix.pulse.pactl("list", "short", "sinks"):
            matrix.pulse.load_sink("mic")
    assert last_end["reason"] == "control" and states == LIVE_THEN_ENDED
    kiosk.wait_for(lambda: _streams_of(matrix.pulse, kiosk.process.pid)["source"] == "mic.monitor", 20, "the mic")


def _streams_of(pulse: PulseServer, pid: int) -> dict[str, str]:
    """The daemon's capture stream (source output index, its source's name) and playback stream (sink input)."""
    import pulsectl

    with pulsectl.Pulse("kiosk-matrix", server=pulse.env["PULSE_SERVER"]) as client:
        mine = str(pid)
        names = {source.index: source.name for source in client.source_list()}
        outputs = [o for o in client.source_output_list() if o.proplist.get("application.process.id") == mine]
        inputs = [i.index for i in client.sink_input_list() if i.proplist.get("application.process.id") == mine]
    if len(outputs) != 1 or len(inputs) != 1:
        return {"source": f"not one stream each way yet: {len(outputs)} in, {len(inputs)} out"}
    return {"source_output": str(outputs[0].index), "source": names[outputs[0].source], "sink_input": str(inputs[0])}


def set_connect_timeout(m: Matrix, seconds: float) -> None:
    """Reload the shared daemon with another ``session.connect_timeout_s`` (SIGHUP, as ``systemctl reload``)."""
    config = m.config.read_text()
    current = float(config.split("connect_timeout_s = ")[1].split()[0])
    if current == seconds:
        return
    reloads = m.kiosk.log().count("config reloaded")
    m.config.write_text(config.replace(f"connect_timeout_s = {current}", f"connect_timeout_s = {seconds}"))
    m.kiosk.process.send_signal(signal.SIGHUP)
    m.kiosk.wait_for(lambda: m.kiosk.log().count("config reloaded") > reloads, 20, "the reload")


# (id, raw request line, what the answer's error must say)
CONTROL_CASES: list[tuple[str, bytes, str]] = [
    ("not-json", b"press please\n", "JSON"),
    ("json-array", b"[1, 2]\n", "cmd"),
    ("unknown-command", b'{"cmd": "explode"}\n', "unknown command"),
    ("no-command", b'{"text": "hi"}\n', "cmd"),
    ("say-while-idle", b'{"cmd": "say", "text": "hello"}\n', "press first"),
    ("say-without-text", b'{"cmd": "say"}\n', "text"),
    ("binary-garbage", b"\xff\xfe\x00\x01\n", "JSON"),
    ("key-in-request", b'{"cmd": "__KEY__"}\n', "unknown"),
]


@pytest.mark.parametrize(("line", "says"), [c[1:] for c in CONTROL_CASES], ids=[c[0] for c in CONTROL_CASES])
def test_control_socket_faults(matrix: Matrix, line: bytes, says: str) -> None:
    """A bad control request gets one error answer naming the problem; no session starts; the key is never echoed."""
    kiosk = matrix.kiosk
    key = matrix.sandbox.api_key.encode()
    line = line.replace(b"__KEY__", key)
    mark, log_mark, starts = len(kiosk.events), len(kiosk.log()), matrix.broker.starts
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(kiosk.socket))
        client.sendall(line)
        answer = json.loads(client.makefile("rb").readline())
    assert answer["ok"] is False and says.lower() in answer["error"].lower(), answer
    assert key.decode() not in json.dumps(answer)
    assert kiosk.status()["state"] == "idle" and matrix.broker.starts == starts
    assert states_since(kiosk, mark) == ()
    assert matrix.sandbox.api_key not in kiosk.log()[log_mark:]


# (id, kiosk.toml text after the broker section, the key the error must name)
BROKER = '[broker]\ndialect = "lyzr"\nurl = "http://127.0.0.1:9"\nagent_id = "a"\napi_key_env = "K"\n'
CONFIG_CASES: list[tuple[str, str, str]] = [
    ("unknown-key", BROKER + "[session]\nsilence_timeout = 5\n", "session.silence_timeout"),
    ("wrong-type", BROKER + '[session]\nsilence_timeout_s = "long"\n', "session.silence_timeout_s"),
    ("negative", BROKER + "[session]\nsilence_timeout_s = -1\n", "session.silence_timeout_s"),
    ("insecure-url", BROKER.replace("http://127.0.0.1:9", "http://broker.example.com"), "broker.url"),
    ("unknown-dialect", BROKER.replace('"lyzr"', '"zoom"'), "broker.dialect"),
    ("missing-ca-file", BROKER + 'ca_file = "/nonexistent/ca.pem"\n', "broker.ca_file"),
    ("pin-twice", BROKER + '[trigger]\nbutton_pin = 17\n[leds]\nkind = "single"\npin = 17\n', "17"),
    ("pin-out-of-range", BROKER + "[trigger]\nbutton_pin = 99\n", "trigger.button_pin"),
    ("silence-past-max", BROKER + "[session]\nsilence_timeout_s = 900\n", "max_duration_s"),
    ("bad-toml", BROKER + "[session\n", "line"),
    ("missing-broker", "[session]\nsilence_timeout_s = 5\n", "broker"),
]


KEY_FILE = BROKER.replace('api_key_env = "K"', 'api_key_file = "__DIR__/key"')
CONFIG_CASES += [
    ("key-file-two-lines", KEY_FILE, "broker.api_key_file"),
    ("key-file-curly-quotes", KEY_FILE, "broker.api_key_file"),
    ("key-file-missing", KEY_FILE.replace("/key", "/nokey"), "broker.api_key_file"),
    ("key-env-unset", BROKER.replace('"K"', '"KIOSK_MATRIX_UNSET"'), "broker.api_key_env"),
]
KEY_FILES = {
    "key-file-two-lines": "sk-matrix-secret-0123456789\nsk-matrix-secret-0123456789\n",
    "key-file-curly-quotes": "\u201csk-matrix-secret-0123456789\u201d\n",
}


@pytest.mark.parametrize(("case", "text", "names"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_faults(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    text: str,
    names: str,
) -> None:
    """What ``kiosk run`` would refuse, ``kiosk check-config`` finds first: exit 78, one line naming the key, no
    traceback, no secret (a key, or a password in a URL)."""
    from kiosk.commands import check_config

    monkeypatch.setenv("K", "sk-matrix-secret-0123456789")
    (tmp_path / "key").write_text(KEY_FILES.get(case, "sk-matrix-secret-0123456789\n"))
    path = tmp_path / "kiosk.toml"
    path.write_text(text.replace("__DIR__", str(tmp_path)))
    assert check_config.main([str(path)]) == 78
    err = capsys.readouterr().err
    assert names in err, err
    assert "Traceback" not in err and "hunter2" not in err and "sk-matrix-secret" not in err


def test_config_url_with_a_password_is_shown_without_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broker URL with ``user:pass@`` is valid, but check-config never prints the password."""
    from kiosk.commands import check_config

    path = tmp_path / "kiosk.toml"
    path.write_text(BROKER.replace("http://127.0.0.1:9", "https://me:hunter2@b.example") + "[device]\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("K", "sk-matrix-secret-0123456789")
        code = check_config.main([str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "hunter2" not in out.out + out.err and "sk-matrix-secret" not in out.out + out.err
