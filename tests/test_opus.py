"""The first words as Ogg Opus: what the kiosk encodes decodes again with PyAV (the decoder livekit-agents uses),
whole and with its speech, at a tenth of the size of raw PCM; raw PCM remains where Opus cannot be encoded."""

from __future__ import annotations

import ctypes.util
import io
import logging

import av
import numpy as np
import numpy.typing as npt
import pytest

from agents.speech_meter import measure
from kiosk.audio import opus
from kiosk.audio.firstwords import FirstWordsEncoder
from kiosk.audio.frames import MicFrame
from kiosk.audio.preroll import (
    PCM_MIME,
    UPLINK_BUDGET_BITS,
    PreConnectAudio,
    SessionCapture,
    encode_for_uplink,
    encoded_ahead,
    for_uplink,
)
from tests.fixtures.audio import SpeechClip

OPUS_FRAME_S = 0.02


def first_words(speech: SpeechClip, seconds: float) -> PreConnectAudio:
    """The first ``seconds`` of the test speech as the capture hands them over (48 kHz mono int16)."""
    pcm = speech.pcm(48000)[: int(48000 * seconds)]
    return PreConnectAudio(pcm=pcm.tobytes(), duration_s=len(pcm) / 48000)


def decode(payload: bytes, rate: int) -> npt.NDArray[np.int16]:
    """Decode a stream as livekit-agents' ``AudioStreamDecoder`` does: container probed, Opus, resampled to mono."""
    parts = []
    with av.open(io.BytesIO(payload), mode="r") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(parts).astype(np.int16)


def rms_dbfs(samples: npt.NDArray[np.int16]) -> float:
    """The level of ``samples`` in dBFS."""
    return float(20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)) / 32768))


def test_four_seconds_of_speech_round_trip_through_ogg_opus(speech: SpeechClip) -> None:
    """4 s of speech encode to Ogg Opus a tenth the size of 16 kHz PCM and decode to the same length, level and speech."""
    assert opus.unavailable_reason() == ""
    if ctypes.util.find_library("sndfile"):  # the system's libsndfile (optimised) comes before soundfile's own
        assert "_soundfile_data" not in str(opus._soundfile()._snd)
    audio = for_uplink(first_words(speech, 4.0))
    assert audio.sample_rate == 16000
    buffer = encode_for_uplink(audio)
    assert buffer.mime_type == "audio/ogg;codecs=opus" and buffer.codec == "opus"
    assert buffer.payload[:4] == b"OggS" and b"OpusHead" in buffer.payload[:64]
    assert (buffer.sample_rate, buffer.num_channels) == (16000, 1)
    assert len(buffer.payload) * 10 <= len(audio.pcm), f"{len(buffer.payload)} B of Opus, {len(audio.pcm)} B of PCM"

    original = np.frombuffer(audio.pcm, np.int16)
    decoded = decode(buffer.payload, buffer.sample_rate)
    assert abs(len(decoded) - len(original)) / 16000 <= OPUS_FRAME_S
    assert rms_dbfs(decoded) == pytest.approx(rms_dbfs(original), abs=1.0)
    heard, spoken = measure(decoded, 16000), measure(original, 16000)
    assert len(heard.utterances) == len(spoken.utterances)
    assert heard.speech_s == pytest.approx(spoken.speech_s, rel=0.05)


@pytest.mark.parametrize("seconds", [2.0, 15.0])
def test_the_longest_first_words_fit_a_small_share_of_the_uplink_budget(seconds: float) -> None:
    """Up to 15 s of first words (``max_preconnect_s``) go as 16 kHz Opus, an eighth of 16 kHz PCM: a quarter of the
    budget that raw PCM had to fill by falling back to 8 kHz."""
    t = np.arange(int(48000 * seconds)) / 48000
    tone = (np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t)) * 6000).astype(np.int16)
    buffer = encode_for_uplink(for_uplink(PreConnectAudio(pcm=tone.tobytes(), duration_s=seconds)))
    assert buffer.codec == "opus" and buffer.sample_rate == 16000
    assert len(buffer.payload) * 8 <= len(tone) / 3 * 2
    assert len(buffer.payload) * 8 <= UPLINK_BUDGET_BITS / 4
    assert len(decode(buffer.payload, 16000)) / 16000 == pytest.approx(seconds, abs=OPUS_FRAME_S)


def test_without_opus_the_first_words_go_as_pcm_and_the_log_says_why(
    speech: SpeechClip, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No Ogg Opus encoder (libsndfile missing): raw PCM at the rate that fits the budget, with a warning naming it."""

    def missing() -> None:
        raise opus.OpusUnavailableError("libsndfile.so: cannot open shared object file")

    monkeypatch.setattr(opus, "_soundfile", missing)
    audio = for_uplink(first_words(speech, 4.0))
    with caplog.at_level(logging.WARNING, logger="kiosk.audio.preroll"):
        buffer = encode_for_uplink(audio)
    assert buffer.mime_type == PCM_MIME and buffer.payload == audio.pcm and buffer.sample_rate == 16000
    assert "raw PCM" in caplog.text and "libsndfile.so" in caplog.text


def test_empty_first_words_go_as_empty_pcm(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing recorded yet: an empty PCM stream (the agent stops waiting for it), no warning."""
    with caplog.at_level(logging.WARNING):
        buffer = encode_for_uplink(for_uplink(PreConnectAudio(pcm=b"", duration_s=0.0)))
    assert buffer.payload == b"" and buffer.mime_type == PCM_MIME
    assert caplog.text == ""


def test_rates_and_bitrates_opus_does_not_take_are_refused_with_the_fix() -> None:
    """44.1 kHz must be resampled first; a bitrate outside libsndfile's range and half frames are named."""
    with pytest.raises(ValueError, match="resample first"):
        opus.encode_ogg_opus(bytes(882), 44100)
    with pytest.raises(ValueError, match="6000-256000"):
        opus.encode_ogg_opus(bytes(640), 16000, bitrate_bps=1000)
    with pytest.raises(ValueError, match="whole frames"):
        opus.encode_ogg_opus(bytes(641), 16000)


def test_without_a_system_libsndfile_the_bundled_one_encodes(
    speech: SpeechClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No system libsndfile (soundfile's lookup finds none): the copy in soundfile's wheel encodes the same stream."""

    def nothing(name: str) -> None:
        return None

    monkeypatch.setattr(ctypes.util, "find_library", nothing)
    opus._soundfile.cache_clear()
    try:
        assert opus.unavailable_reason() == ""
        assert "_soundfile_data" in str(opus._soundfile()._snd)
        buffer = encode_for_uplink(for_uplink(first_words(speech, 2.0)))
        assert buffer.codec == "opus"
        assert len(decode(buffer.payload, 16000)) / 16000 == pytest.approx(2.0, abs=OPUS_FRAME_S)
    finally:
        monkeypatch.undo()
        opus._soundfile.cache_clear()


def _held(capture: SessionCapture, pcm: npt.NDArray[np.int16]) -> None:
    """Feed ``pcm`` (48 kHz) to ``capture`` as the engine does: 10 ms frames."""
    for i in range(0, len(pcm) - 479, 480):
        capture.feed(MicFrame(t=100.0 + i / 48000, pcm=pcm[i : i + 480]))


def test_first_words_encoded_while_held_decode_to_the_same_speech(speech: SpeechClip) -> None:
    """Frames held by a session are encoded while it connects: at the take, the Ogg Opus stream is the whole held
    speech (length, level, utterances, as PyAV decodes it for livekit-agents), a tenth of 16 kHz PCM."""
    pcm = speech.pcm(48000)[: 48000 * 4]
    encoder = FirstWordsEncoder()
    capture = SessionCapture(start=0.0, backlog=[], max_s=15.0, on_close=lambda c: None, encoder=encoder)
    _held(capture, pcm)
    assert encoder.frames == 400
    pre = capture.take_preconnect()
    assert pre.opus is not None
    payload = pre.opus.result(timeout=30)
    assert payload is not None and payload[:4] == b"OggS"
    buffer = encoded_ahead(pre, payload, 1.0)
    assert (buffer.codec, buffer.sample_rate, buffer.duration_s) == ("opus", 16000, 4.0)
    original = np.frombuffer(for_uplink(pre).pcm, np.int16)
    decoded = decode(payload, 16000)
    assert len(payload) * 10 <= len(original) * 2
    assert abs(len(decoded) - len(original)) / 16000 <= OPUS_FRAME_S
    assert rms_dbfs(decoded) == pytest.approx(rms_dbfs(original), abs=1.0)
    heard, spoken = measure(decoded, 16000), measure(original, 16000)
    assert len(heard.utterances) == len(spoken.utterances)
    assert heard.speech_s == pytest.approx(spoken.speech_s, rel=0.05)
    capture.close()


def test_first_words_over_the_limit_are_encoded_when_sent() -> None:
    """Held audio that overran ``max_preconnect_s`` lost its oldest frames: what was encoded ahead no longer matches,
    so the take gives none (the buffer is encoded whole when sent); a session closed before the take drops it."""
    tone = (np.sin(np.arange(48000 * 2) / 7) * 8000).astype(np.int16)
    capture = SessionCapture(start=0.0, backlog=[], max_s=1.0, on_close=lambda c: None, encoder=FirstWordsEncoder())
    _held(capture, tone)
    pre = capture.take_preconnect()
    assert pre.opus is None and pre.dropped_s == pytest.approx(1.0)
    closed = FirstWordsEncoder()
    capture = SessionCapture(start=0.0, backlog=[], max_s=5.0, on_close=lambda c: None, encoder=closed)
    _held(capture, tone)
    capture.close()
    closed.feed(tone[:480])  # a frame after the end is ignored
    assert closed.frames == 200


def test_first_words_without_opus_are_encoded_when_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Opus encoder here: the encoder says so once and gives None, so the buffer goes the old way."""

    def missing() -> None:
        raise opus.OpusUnavailableError("libsndfile.so: cannot open shared object file")

    monkeypatch.setattr(opus, "_soundfile", missing)
    encoder = FirstWordsEncoder()
    for _ in range(120):
        encoder.feed(np.ones(480, dtype=np.int16))
    assert encoder.seal().result(timeout=10) is None
