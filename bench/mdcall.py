"""The in-call CPU baseline: LiveKit's own ``rtc.MediaDevices`` (APM capture + publish + playback) in one process.

    python -m bench.mdcall --url HTTP_URL --seconds S   (broker key in KIOSK_BENCH_BROKER_KEY)

Starts a session at the sandbox broker as the kiosk does, publishes the PulseAudio microphone through
``MediaDevices.open_input`` (AEC, NS, HPF, AGC) and plays the agent through ``open_output``, prints ``LIVE`` once
published, stays ``S`` seconds, ends the session at the broker and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import httpx
import sounddevice as sd
from livekit import rtc

from bench.baseline_cli import baseline_client_main
from bench.pulse import MIC_PCM, SPK_PCM


def _device(name: str, kind: str) -> int:
    for index, device in enumerate(sd.query_devices()):
        if name in device["name"] and device[f"max_{kind}_channels"] > 0:
            return index
    raise SystemExit(f"no {kind} device named {name}")


async def call(url: str, seconds: float) -> None:
    """One call with MediaDevices, then end it at the broker."""
    key = os.environ["KIOSK_BENCH_BROKER_KEY"]
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{url}/v1/sessions/start",
            json={"userIdentity": "bench-mediadevices", "agentId": "bench-agent", "agentConfig": {}},
            headers={"x-api-key": key},
        )
        data = answer.json()
        devices = rtc.MediaDevices()
        capture = devices.open_input(input_device=_device(MIC_PCM, "input"))
        player = devices.open_output(output_device=_device(SPK_PCM, "output"))
        room = rtc.Room()
        tasks: set[asyncio.Task[None]] = set()

        def on_track(track: rtc.Track, _pub: rtc.RemoteTrackPublication, _who: rtc.RemoteParticipant) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                task = asyncio.get_running_loop().create_task(player.add_track(track))
                tasks.add(task)

        room.on("track_subscribed", on_track)
        try:
            async with asyncio.timeout(20):
                await room.connect(data["livekitUrl"], data["userToken"])
                track = rtc.LocalAudioTrack.create_audio_track("microphone", capture.source)
                options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                await room.local_participant.publish_track(track, options)
                await player.start()
            print("LIVE", flush=True)
            await asyncio.sleep(seconds)
            await client.post(f"{url}/v1/sessions/end", json={"roomName": data["roomName"]}, headers={"x-api-key": key})
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(player.aclose(), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(capture.aclose(), 5)


def main(argv: list[str] | None = None) -> int:
    """Run one MediaDevices call."""
    return baseline_client_main(argv, prog="python -m bench.mdcall", description=__doc__, call=call)


if __name__ == "__main__":
    sys.exit(main())
