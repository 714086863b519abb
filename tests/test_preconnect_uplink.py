"""The kiosk's pre-connect buffer through the sandbox server to an agent that reads it the way livekit-agents does
(the sandbox's :class:`PreconnectInbox`: byte stream on ``lk.agent.pre-connect-audio-buffer``, 3 s windows, Opus
told apart by its mime type and decoded with PyAV)."""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import time

import av
import numpy as np
import numpy.typing as npt
import pytest

from agents.speech_meter import measure
from kiosk.audio import opus
from kiosk.audio.preroll import PCM_MIME, PreConnectAudio, for_uplink
from kiosk_sandbox.preconnect import PRECONNECT_TOPIC, PreconnectAudio, PreconnectInbox
from tests.fixtures.audio import SpeechClip
from tests.fixtures.room import Kiosk, participant, token
from tests.fixtures.sandbox import SandboxHandle


async def send_and_take(
    sandbox: SandboxHandle, audio: PreConnectAudio, *, raw: tuple[bytes, str] | None = None
) -> tuple[PreconnectAudio | None, str]:
    """Connect a kiosk and an agent to a fresh room, send ``audio`` as the kiosk does (or the ``raw`` payload and
    mime type as another client would, with ``audio``'s rate), and return what the agent took for the kiosk's
    microphone (and why it took nothing)."""
    room = f"room-{secrets.token_hex(4)}"
    k = Kiosk()
    inbox = PreconnectInbox()
    await k.room.connect(sandbox.ws_url, token(sandbox, "kiosk-1", room), budget_s=10)
    try:
        async with participant(sandbox, room, "agent-1", kind="agent", **{"lk.agent.state": "listening"}) as agent:
            agent.register_byte_stream_handler(PRECONNECT_TOPIC, inbox.on_stream)
            assert await k.room.wait_for_agent(10)
            mic = next(iter(k.room.room.local_participant.track_publications))
            async with asyncio.timeout(10):
                if raw is None:
                    await k.room.send_preconnect(for_uplink(audio))
                else:
                    attributes = {"sampleRate": str(audio.sample_rate), "channels": "1", "trackId": mic}
                    await k.room.room.local_participant.send_bytes(
                        raw[0],
                        topic=PRECONNECT_TOPIC,
                        mime_type=raw[1],
                        attributes=attributes,
                        destination_identities=["agent-1"],
                    )
                taken = await inbox.take(mic)
            await inbox.aclose()
    finally:
        await k.room.close(budget_s=5)
    return taken, inbox.rejected


async def test_the_first_words_reach_the_agent_as_opus_with_their_speech(
    sandbox: SandboxHandle, speech: SpeechClip, caplog: pytest.LogCaptureFixture
) -> None:
    """4 s of first words go as Ogg Opus (``audio/ogg;codecs=opus``, 16 kHz mono) and the agent decodes all of them."""
    pcm = speech.pcm(48000)[: 4 * 48000]
    with caplog.at_level(logging.INFO, logger="kiosk.daemon.room"):
        taken, rejected = await send_and_take(sandbox, PreConnectAudio(pcm=pcm.tobytes(), duration_s=4.0))
    assert taken is not None, rejected
    assert taken.mime_type == opus.OGG_OPUS_MIME
    assert (taken.sample_rate, taken.channels) == (16000, 1)
    assert taken.seconds == pytest.approx(4.0, abs=0.02)
    spoken, heard = measure(pcm, 48000), measure(taken.samples, taken.sample_rate)
    assert heard.speech_s == pytest.approx(spoken.speech_s, rel=0.05)
    [sent] = [r.getMessage() for r in caplog.records if "first words" in r.getMessage()]
    assert "opus, audio/ogg;codecs=opus, 16000 Hz" in sent, sent


async def test_without_opus_the_agent_gets_raw_pcm(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Opus cannot be encoded, the same words arrive as raw 16 kHz PCM (``application/octet-stream``)."""

    def missing() -> None:
        raise opus.OpusUnavailableError("no libsndfile here")

    monkeypatch.setattr(opus, "_soundfile", missing)
    t = np.arange(2 * 48000) / 48000
    pcm = (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)
    taken, rejected = await send_and_take(sandbox, PreConnectAudio(pcm=pcm.tobytes(), duration_s=2.0))
    assert taken is not None, rejected
    assert taken.mime_type == PCM_MIME and taken.sample_rate == 16000
    assert taken.seconds == pytest.approx(2.0, abs=0.01)


def webm_opus(samples: npt.NDArray[np.int16], rate: int) -> bytes:
    """``samples`` as the JS SDK's ``MediaRecorder`` sends them: Opus in WebM (encoded with PyAV's libopus)."""
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


async def test_the_js_sdks_webm_opus_is_decoded_too(sandbox: SandboxHandle, speech: SpeechClip) -> None:
    """``audio/webm;codecs=opus`` (what livekit-client's ``startPreConnectBuffer`` records) decodes like Ogg Opus."""
    pcm = speech.pcm(48000)[: 3 * 48000]
    audio = PreConnectAudio(pcm=pcm.tobytes(), duration_s=3.0)
    taken, rejected = await send_and_take(sandbox, audio, raw=(webm_opus(pcm, 48000), "audio/webm;codecs=opus"))
    assert taken is not None, rejected
    assert taken.sample_rate == 48000 and taken.seconds == pytest.approx(3.0, abs=0.03)
    assert measure(taken.samples, 48000).speech_s == pytest.approx(measure(pcm, 48000).speech_s, rel=0.05)


async def test_an_opus_encode_over_its_budget_sends_the_words_as_pcm_in_time(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A starved CPU that makes the Opus encode run past ``OPUS_BUDGET_S`` must not make the words late: they go as
    16 kHz PCM, whole, and the agent takes them."""
    real = opus.encode_ogg_opus

    def slow(pcm: bytes, rate: int, channels: int) -> bytes:
        time.sleep(4.5)  # a CPU this starved (seen: 4.3 s for 4.6 s of speech)
        return real(pcm, rate, channels)

    monkeypatch.setattr(opus, "encode_ogg_opus", slow)
    t = np.arange(2 * 48000) / 48000
    pcm = (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)
    taken, rejected = await send_and_take(sandbox, PreConnectAudio(pcm=pcm.tobytes(), duration_s=2.0))
    assert taken is not None, rejected
    assert taken.mime_type == PCM_MIME and taken.seconds == pytest.approx(2.0, abs=0.01)
