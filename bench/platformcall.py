"""The second in-call baseline: LiveKit's native audio path, ``rtc.PlatformAudio`` (WebRTC's audio device module).

    python -m bench.platformcall --url HTTP_URL --seconds S   (broker key in KIOSK_BENCH_BROKER_KEY)

Starts a session at the sandbox broker as the kiosk does and lets WebRTC's ADM do all the audio: it captures the
PulseAudio microphone natively (AEC, NS, AGC in WebRTC's own capture path) for a track published as the microphone,
and plays the agent natively: remote audio goes to the ADM's playout by subscribing alone (the SDK's AdmProxy mixes
every received track into the platform device once ``PlatformAudio`` exists), no ``AudioStream`` is read in Python.
Prints ``LIVE`` once published, stays ``S`` seconds, checks that the ADM's streams were on the right PulseAudio
devices, ends the session at the broker and exits (status 1 when the streams were not where they should be).

On Linux the ADM talks to PulseAudio (``PULSE_SERVER``) and lists no monitor sources: it records the server's default
source and plays to its default sink, so this sets those of the bench's private server to ``mic.monitor`` (what the
daemon records) and ``spk`` (where the daemon plays) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
from livekit import rtc

from bench.baseline_cli import baseline_client_main

MIC_SOURCE = "mic.monitor"
SPK_SINK = "spk"


def _pactl(*args: str) -> str:
    done = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout


@contextlib.contextmanager
def _routed_defaults() -> Iterator[None]:
    """The server's default source and sink are the bench's microphone and speaker for the block (the ADM uses
    them); the previous defaults are restored afterwards, so the benchmarks after this one see the server as it was."""
    before = {kind: _pactl(f"get-default-{kind}").strip() for kind in ("source", "sink")}
    _pactl("set-default-source", MIC_SOURCE)
    _pactl("set-default-sink", SPK_SINK)
    try:
        yield
    finally:
        for kind, name in before.items():
            with contextlib.suppress(subprocess.SubprocessError):
                _pactl(f"set-default-{kind}", name)


def _select_devices(platform: rtc.PlatformAudio) -> None:
    """Use the default devices, after checking the default recording device is ``mic.monitor``."""
    recording = platform.recording_devices()
    if not recording or MIC_SOURCE not in recording[0].name:
        raise SystemExit(f"PlatformAudio's default recording device is not {MIC_SOURCE}: {recording}")
    playout = platform.playout_devices()
    if not playout:
        raise SystemExit("PlatformAudio lists no playout device")
    platform.set_recording_device(recording[0].id)
    platform.set_playout_device(playout[0].id)


def _streams_of_this_process() -> dict[str, list[str]]:
    """The devices of this process's PulseAudio streams: {"sink_inputs": [sink names], "source_outputs": [...]}."""
    names = {
        kind: {str(d["index"]): d["name"] for d in json.loads(_pactl("--format=json", "list", kind))}
        for kind in ("sinks", "sources")
    }
    pid = str(os.getpid())
    found: dict[str, list[str]] = {}
    for kind, device, key in (("sink-inputs", "sinks", "sink"), ("source-outputs", "sources", "source")):
        streams = json.loads(_pactl("--format=json", "list", kind))
        found[kind.replace("-", "_")] = [
            names[device].get(str(s[key]), str(s[key]))
            for s in streams
            if s.get("properties", {}).get("application.process.id") == pid
        ]
    return found


async def call(url: str, seconds: float) -> None:
    """One call with PlatformAudio, then end it at the broker."""
    key = os.environ["KIOSK_BENCH_BROKER_KEY"]
    with _routed_defaults():
        streams = await _call(url, key, seconds)
    print(f"PulseAudio streams of the call: {json.dumps(streams)}", file=sys.stderr, flush=True)
    if streams.get("source_outputs") != [MIC_SOURCE] or SPK_SINK not in streams.get("sink_inputs", []):
        raise SystemExit(f"PlatformAudio did not record {MIC_SOURCE} and play to {SPK_SINK}: {streams}")


async def _call(url: str, key: str, seconds: float) -> dict[str, list[str]]:
    """The call itself; returns the devices of its PulseAudio streams, read just before it ends."""
    platform = rtc.PlatformAudio()
    try:
        _select_devices(platform)
    except BaseException:
        platform.close()
        raise
    source = platform.create_audio_source(
        rtc.PlatformAudioOptions(echo_cancellation=True, noise_suppression=True, auto_gain_control=True)
    )
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{url}/v1/sessions/start",
            json={"userIdentity": "bench-platformaudio", "agentId": "bench-agent", "agentConfig": {}},
            headers={"x-api-key": key},
        )
        data = answer.json()
        room = rtc.Room()
        streams: dict[str, list[str]] = {}
        try:
            async with asyncio.timeout(20):
                await room.connect(data["livekitUrl"], data["userToken"])
                track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
                options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                await room.local_participant.publish_track(track, options)
            print("LIVE", flush=True)
            await asyncio.sleep(seconds)
            try:
                streams = _streams_of_this_process()
            finally:
                end = {"roomName": data["roomName"]}
                await client.post(f"{url}/v1/sessions/end", json=end, headers={"x-api-key": key})
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), 5)
            source.close()
            platform.close()
    return streams


def main(argv: list[str] | None = None) -> int:
    """Run one PlatformAudio call."""
    return baseline_client_main(argv, prog="python -m bench.platformcall", description=__doc__, call=call)


if __name__ == "__main__":
    sys.exit(main())
