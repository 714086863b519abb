"""The network-fault link (tests/fixtures/netlink.py): real UDP and TCP through the relay, its impairments, cleanup.

A process in the test's namespace talks to a server in this (root) namespace on the link's root-side address.
Assertions stand on the relay's own counters and on ordering, never on wall-clock speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.netlink import NETNS_DIR, NetLink, NetLinkUnavailable, check_support, open_net_link, skip_or_fail
from tests.fixtures.sandbox import SandboxHandle, running_sandbox

#: A UDP client for the namespace. argv: HOST PORT COUNT MODE; MODE "burst" sends COUNT datagrams (20 at a time,
#: 2 ms apart), "ping" sends one and waits for its echo (5 s at most) before the next. Prints a JSON report.
UDP_CLIENT = r"""
import json, socket, sys, time
host, port, count, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rtts, lost = [], 0
for i in range(count):
    sent = time.monotonic()
    s.sendto(b"%08d" % i, (host, port))
    if mode == "ping":
        s.settimeout(5)
        try:
            while int(s.recv(64)) != i:
                pass
            rtts.append((time.monotonic() - sent) * 1000)
        except socket.timeout:
            lost += 1
    elif i % 20 == 19:
        time.sleep(0.002)
print(json.dumps({"rtts_ms": rtts, "lost": lost}))
"""

#: A TCP client for the namespace. argv: HOST PORT BYTES. Sends BYTES of random data, reads the server's SHA-256 of
#: what it got and prints whether it matches.
TCP_CLIENT = r"""
import hashlib, os, socket, sys
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
answer = b""
while chunk := c.recv(4096):
    answer += chunk
print("match" if answer.decode() == hashlib.sha256(data).hexdigest() else "mismatch")
"""


#: ``asm-generic/socket.h``: a receive buffer beyond rmem_max (root only), so a burst of 2000 datagrams all fit.
SO_RCVBUFFORCE = 33


class UdpServer:
    """A UDP server on the root-side address: records each datagram's sequence number and echoes it (if asked)."""

    def __init__(self, host: str, *, echo: bool) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.echo = echo
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(64)
            except TimeoutError:
                continue
            self.seen.append(int(data))
            if self.echo:
                self.sock.sendto(data, peer)

    def wait_count(self, count: int, within: float = 20.0) -> None:
        """Wait until ``count`` datagrams arrived (AssertionError naming how many did after ``within`` s)."""
        done = threading.Event()
        for _ in range(int(within * 20)):
            if len(self.seen) >= count or done.wait(0.05):
                break
        assert len(self.seen) >= count, f"{len(self.seen)} of {count} datagrams arrived"

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def echo_server(net_link: NetLink) -> Iterator[UdpServer]:
    """A UDP echo server on the link's root-side address."""
    server = UdpServer(net_link.root_address, echo=True)
    yield server
    server.close()


def udp_client(link: NetLink, port: int, count: int, mode: str, timeout: float = 60.0) -> dict[str, list[float] | int]:
    """Run :data:`UDP_CLIENT` in the namespace against ``link.root_address:port``; its report."""
    done = link.run(
        [sys.executable, "-c", UDP_CLIENT, link.root_address, str(port), str(count), mode],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, list[float] | int] = json.loads(done.stdout)
    return report


def _serve_digest(listener: socket.socket, *, timeout_s: float) -> threading.Thread:
    """Accept one connection on ``listener`` in a thread, read it to its end and answer its SHA-256 (hex)."""
    listener.settimeout(timeout_s)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(timeout_s)
            digest = hashlib.sha256()
            while chunk := conn.recv(65536):
                digest.update(chunk)
            conn.sendall(digest.hexdigest().encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_udp_and_tcp_pass_both_ways(net_link: NetLink, echo_server: UdpServer) -> None:
    """Datagrams and a TCP stream from the namespace reach the root-side server and come back, every packet counted."""
    report = udp_client(net_link, echo_server.port, 100, "ping")
    assert report["lost"] == 0
    counters = net_link.counters()
    assert (counters.up.received, counters.up.passed, counters.down.passed) == (100, 100, 100)
    assert counters.up.dropped == counters.down.dropped == 0

    listener = socket.create_server((net_link.root_address, 0))
    thread = _serve_digest(listener, timeout_s=30)
    code = [sys.executable, "-c", TCP_CLIENT, net_link.root_address, str(listener.getsockname()[1]), "300000"]
    done = net_link.run(code, capture_output=True, text=True, timeout=60)
    thread.join(timeout=30)
    listener.close()
    assert done.stdout.strip() == "match", done.stderr
    assert net_link.counters().up.passed > 100 + 300000 // 1500


def test_loopback_forward_carries_tcp_over_the_link(net_link: NetLink) -> None:
    """127.0.0.1:P in the namespace reaches 127.0.0.1:P here through the relay: a blackout stalls it, recovery ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    thread = _serve_digest(listener, timeout_s=60)
    net_link.forward_loopback(port)
    net_link.blackout(True)
    client = net_link.popen(
        [sys.executable, "-c", TCP_CLIENT, "127.0.0.1", str(port), "100000"], stdout=subprocess.PIPE, text=True
    )
    for _ in range(300):  # the forwarder's connection over the link tries and is dropped
        if net_link.counters().up.dropped_blackout > 0:
            break
        threading.Event().wait(0.05)
    assert net_link.counters().up.dropped_blackout > 0 and client.poll() is None
    net_link.blackout(False)
    out, _ = client.communicate(timeout=90)
    thread.join(timeout=30)
    listener.close()
    assert out.strip() == "match"
    assert net_link.counters().up.passed > 100000 // 1500


def test_blackout_drops_everything_then_recovers(net_link: NetLink, echo_server: UdpServer) -> None:
    """During a blackout no packet passes either way (all counted as dropped); afterwards packets pass again."""
    net_link.blackout(True)
    udp_client(net_link, echo_server.port, 50, "burst")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(30):
            sender.sendto(b"%08d" % i, (net_link.ns_address, 9))
    counters = net_link.counters()
    assert (counters.up.received, counters.up.dropped_blackout, counters.up.passed) == (50, 50, 0)
    assert (counters.down.received, counters.down.dropped_blackout, counters.down.passed) == (30, 30, 0)
    assert echo_server.seen == []

    net_link.blackout(False)
    report = udp_client(net_link, echo_server.port, 20, "ping")
    assert report["lost"] == 0
    after = net_link.counters()
    assert (after.up.passed, after.down.passed) == (20, 20)


def test_blackout_drops_packets_already_delayed(net_link: NetLink, echo_server: UdpServer) -> None:
    """Packets in flight in a delayed link when it goes dark are dropped, not delivered after it."""
    net_link.impair(delay_ms=600_000, direction="up")
    udp_client(net_link, echo_server.port, 10, "burst")
    assert net_link.counters().up.in_flight == 10
    net_link.blackout(True)
    counters = net_link.counters()
    assert (counters.up.in_flight, counters.up.dropped_blackout, counters.up.passed) == (0, 10, 0)


def test_five_percent_loss_within_statistical_bounds(net_link: NetLink) -> None:
    """5 % loss on 2000 datagrams drops a count within 5 sigma of 100, and every packet not dropped arrives."""
    server = UdpServer(net_link.root_address, echo=False)
    try:
        net_link.impair(loss=0.05, direction="up")
        udp_client(net_link, server.port, 2000, "burst")
        counters = net_link.counters()
        assert counters.up.received == 2000
        sigma = (2000 * 0.05 * 0.95) ** 0.5
        assert abs(counters.up.dropped_loss - 100) <= 5 * sigma, counters.up
        assert counters.up.passed + counters.up.dropped_loss == 2000
        server.wait_count(counters.up.passed)
        assert len(server.seen) == counters.up.passed
    finally:
        server.close()


def test_delay_and_jitter_shift_the_round_trip(net_link: NetLink, echo_server: UdpServer) -> None:
    """80 +/- 40 ms each way: every packet waits 40..120 ms in the relay and no round trip is shorter than 80 ms."""
    net_link.impair(delay_ms=80, jitter_ms=40, seed=7)
    report = udp_client(net_link, echo_server.port, 60, "ping")
    assert report["lost"] == 0
    rtts = report["rtts_ms"]
    assert isinstance(rtts, list) and min(rtts) >= 80.0
    counters = net_link.counters()
    for way in (counters.up, counters.down):
        assert way.passed == 60
        assert way.delay_ms_min is not None and way.delay_ms_max is not None and way.delay_ms_mean is not None
        assert way.delay_ms_min >= 40.0 and way.delay_ms_max <= 120.0
        assert 60.0 <= way.delay_ms_mean <= 100.0  # uniform draws: mean 80, standard error about 3 ms
        assert way.delay_ms_max - way.delay_ms_min > 40.0  # the jitter really varies


def test_jitter_keeps_order_unless_reordering_is_asked(net_link: NetLink) -> None:
    """With jitter a burst still arrives in order; with ``reorder=True`` later packets overtake earlier ones."""
    server = UdpServer(net_link.root_address, echo=False)
    try:
        net_link.impair(delay_ms=40, jitter_ms=30, seed=3, direction="up")
        udp_client(net_link, server.port, 200, "burst")
        server.wait_count(200)
        assert server.seen == sorted(server.seen)
        server.seen.clear()
        net_link.impair(reorder=True, direction="up")
        udp_client(net_link, server.port, 200, "burst")
        server.wait_count(200)
        assert sorted(server.seen) == list(range(200)) and server.seen != sorted(server.seen)
    finally:
        server.close()


def test_bad_setting_is_named(net_link: NetLink) -> None:
    """A bad impairment value is refused with a message naming it, and the link keeps working."""
    with pytest.raises(ValueError, match="loss is a fraction"):
        net_link.impair(loss=5)
    with pytest.raises(ValueError, match="direction must be"):
        net_link.blackout(True, direction="sideways")
    assert net_link.counters().up.received == 0


def _links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def test_cleanup_leaves_nothing_even_when_the_test_fails() -> None:
    """A failing block still stops the namespace's processes and the relay and removes the namespace and TUNs."""
    try:
        check_support()
    except NetLinkUnavailable as exc:
        skip_or_fail(str(exc))
    started: list[subprocess.Popen[bytes]] = []
    seen: dict[str, object] = {}
    with pytest.raises(RuntimeError, match="the test failed"), open_net_link() as link:
        started.append(link.popen(["sleep", "600"]))
        # one the fixture did not start itself: found in the namespace and stopped all the same
        started.append(subprocess.Popen(link.command(["sleep", "600"])))
        seen.update(name=link.name, relay=link.relay, links=_links())
        raise RuntimeError("the test failed")
    name = str(seen["name"])
    pid, number = name.split("-")[2:]
    assert f"kl{pid}o{number}" in str(seen["links"])
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not (NETNS_DIR / name).exists()
    assert f"kl{pid}o{number}" not in _links()
    relay = seen["relay"]
    assert isinstance(relay, subprocess.Popen) and relay.poll() is not None
    for process in started:
        process.wait(timeout=10)  # already reaped or dead: returns at once
        assert process.returncode is not None


def test_a_process_still_entering_the_namespace_is_stopped_too() -> None:
    """An ``nsenter`` the test started that has not entered the namespace yet (stopped here before it could: a busy
    machine does that) is stopped at cleanup as well, not left to enter it afterwards."""
    try:
        check_support()
    except NetLinkUnavailable as exc:
        skip_or_fail(str(exc))
    with open_net_link() as link:
        late = subprocess.Popen(link.command(["sleep", "600"]))
        os.kill(late.pid, signal.SIGSTOP)
    late.wait(timeout=10)
    assert late.returncode is not None


def test_skip_outside_ci_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusing kernel skips the test with a loud reason, but fails it when CI is "true"."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="NETWORK-FAULT TEST NOT RUN: no tun"):
        skip_or_fail("no tun")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        skip_or_fail("no tun")


def test_missing_iproute2_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ip tool the reason names the package to install."""
    monkeypatch.setattr("tests.fixtures.netns.shutil.which", lambda _tool: None)
    if os.geteuid() != 0:
        pytest.skip("the root check comes first when not root")
    with pytest.raises(NetLinkUnavailable, match="apt-get install iproute2"):
        check_support()


#: The official SDK in the namespace: connect, publish a 440 Hz tone for ``SECONDS``, print PUBLISHED, then leave.
SDK_CLIENT = r"""
import asyncio, os, sys
import numpy as np
from livekit import rtc

async def main():
    room = rtc.Room()
    await asyncio.wait_for(room.connect(os.environ["LK_URL"], os.environ["LK_TOKEN"]), 30)
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await asyncio.wait_for(room.local_participant.publish_track(track, options), 30)
    print("PUBLISHED", flush=True)
    t = np.arange(480) / 48000
    for i in range(int(float(sys.argv[1]) * 100)):
        tone = (8000 * np.sin(2 * np.pi * 440 * (t + i * 0.01))).astype(np.int16)
        await source.capture_frame(rtc.AudioFrame(tone.tobytes(), 48000, 1, 480))
    await room.disconnect()
    await source.aclose()

asyncio.run(main())
"""


@pytest.mark.slow
async def test_official_sdk_reaches_the_sandbox_through_the_link(net_link: NetLink, tmp_path: Path) -> None:
    """rtc.Room in the namespace connects to the sandbox on the root-side address over ICE and its tone is heard."""
    with running_sandbox(tmp_path, "--host", net_link.root_address, "--agent-no-show", "20") as (sb, _process):
        assert isinstance(sb, SandboxHandle) and net_link.root_address in sb.ws_url
        answer = await sb.post(
            "/v1/sessions/start", {"userIdentity": "sdk-in-netns", "agentId": "netlink-agent", "agentConfig": {}}
        )
        data = answer.json()
        env = {**os.environ, "LK_URL": data["livekitUrl"], "LK_TOKEN": data["userToken"]}
        client = net_link.popen(
            [sys.executable, "-c", SDK_CLIENT, "6"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.to_thread(client.communicate, timeout=60)
        # The exit code is not judged: the SDK's native runtime now and then aborts while the process shuts down
        # ("panic in a function that cannot unwind", SIGABRT) after everything was sent; what the agent heard is.
        assert b"PUBLISHED" in out, f"exit {client.returncode}: {err.decode()[-2000:]}"
        record = await sb.wait_session(data["roomName"], lambda r: bool(r["heard"]["live_wav_path"]), within=20)
        await sb.post("/v1/sessions/end", {"roomName": data["roomName"]})
        assert record["heard"]["first_audio_at"] is not None
        wav = await asyncio.to_thread(Path(record["heard"]["live_wav_path"]).read_bytes)
        with wave.open(io.BytesIO(wav)) as reader:
            rate = reader.getframerate()
            heard = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        spectrum = np.abs(np.fft.rfft(heard.astype(np.float64)))
        peak_hz = float(np.argmax(spectrum[1:]) + 1) * rate / len(heard)
        assert abs(peak_hz - 440) < 10, f"the agent heard a peak at {peak_hz:.0f} Hz, not the 440 Hz tone"
    counters = net_link.counters()
    # media went through the relay both ways (ICE checks, RTP, RTCP, DTLS), not only the signalling
    assert counters.up.passed > 300 and counters.down.passed > 50, counters
