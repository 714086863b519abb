"""The lossy-link baseline: a plain LiveKit client with ``rtc.MediaDevices``, driven line by line on stdin.

    python -m bench.netclient --url HTTP_URL      (broker key in KIOSK_BENCH_BROKER_KEY; run in the link's namespace)

Prints ``READY`` once imported. On ``GO`` (the press) it does what a client without pre-roll does: the broker start
(as the kiosk's lyzr dialect does), ``MediaDevices.open_input`` on the PulseAudio microphone (AEC, NS, HPF, AGC),
``Room.connect``, ``publish_track`` and the agent played through ``open_output`` on the speaker sink (the echo
canceller's far end, as in :mod:`bench.mdcall`); then prints ``ROOM <name>`` and ``LIVE <time.monotonic()>``. On ``END`` it ends the session at
the broker, leaves the room and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time

import httpx
from livekit import rtc

from bench.mdcall import _device
from bench.pulse import MIC_PCM, SPK_PCM

IDENTITY = "bench-mediadevices"
STEP_S = 30.0


async def _line() -> str:
    return (await asyncio.to_thread(sys.stdin.readline)).strip()


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def call(url: str) -> None:
    """Wait for GO, go live, wait for END, end the session."""
    key = os.environ["KIOSK_BENCH_BROKER_KEY"]
    devices = rtc.MediaDevices()
    device, speaker = _device(MIC_PCM, "input"), _device(SPK_PCM, "output")
    _say("READY")
    if await _line() != "GO":
        return
    room = rtc.Room()
    capture = None
    player = devices.open_output(output_device=speaker)
    tasks: set[asyncio.Task[None]] = set()

    def on_track(track: rtc.Track, _pub: rtc.RemoteTrackPublication, _who: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.add(asyncio.get_running_loop().create_task(player.add_track(track)))

    room.on("track_subscribed", on_track)
    async with httpx.AsyncClient(timeout=STEP_S) as client:
        answer = await client.post(
            f"{url}/v1/sessions/start",
            json={"userIdentity": IDENTITY, "agentId": "bench-agent", "agentConfig": {}},
            headers={"x-api-key": key},
        )
        data = answer.json()
        _say(f"ROOM {data['roomName']}")
        try:
            capture = devices.open_input(input_device=device)
            async with asyncio.timeout(STEP_S):
                await room.connect(data["livekitUrl"], data["userToken"])
                track = rtc.LocalAudioTrack.create_audio_track("microphone", capture.source)
                options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                await room.local_participant.publish_track(track, options)
                await player.start()
            _say(f"LIVE {time.monotonic()}")
            await _line()
            await client.post(f"{url}/v1/sessions/end", json={"roomName": data["roomName"]}, headers={"x-api-key": key})
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(player.aclose(), 5)
            if capture is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(capture.aclose(), 5)


def main(argv: list[str] | None = None) -> int:
    """Run one call as told on stdin."""
    parser = argparse.ArgumentParser(prog="python -m bench.netclient", description=__doc__)
    parser.add_argument("--url", required=True)
    args = parser.parse_args(argv)
    asyncio.run(call(args.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
