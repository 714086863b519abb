"""Ogg Opus encoding of the first words, the compressed form of LiveKit's pre-connect audio buffer.

livekit-agents (``voice/room_io/_pre_connect_audio.py``) decodes a pre-connect byte stream whose mime type is
``audio/opus`` or contains ``codecs=opus`` with its ``AudioStreamDecoder``: PyAV (FFmpeg) probes the container from
the first bytes, decodes Opus and resamples to the stream's ``sampleRate`` / ``channels`` attributes. The LiveKit JS
SDK sends WebM (``audio/webm;codecs=opus``, from ``MediaRecorder``); the kiosk sends Ogg Opus (RFC 7845, the Ogg
container of RFC 3533) as ``audio/ogg;codecs=opus``, the media type RFC 7845 section 9 registers.

The encoder is libsndfile's, through ``python-soundfile`` (the system's ``libsndfile1`` when it writes Opus, else
the copy bundled in soundfile's wheels, see :func:`_soundfile`): about 2 MiB of resident memory, against about
20 MiB for PyAV. 24 kbit/s mono Opus keeps speech intelligible to a recogniser at a tenth of the size of
16 kHz 16-bit PCM.
"""

from __future__ import annotations

import functools
import io
import sys
from typing import Any

import numpy as np

#: The mime type of the stream (RFC 7845 section 9); livekit-agents takes any mime type containing ``codecs=opus``.
OGG_OPUS_MIME = "audio/ogg;codecs=opus"
#: Target bitrate of the encoder in bit/s (libopus' range is 6-510 kbit/s; 24 kbit/s is wideband speech).
BITRATE_BPS = 24_000
#: Input rates libopus accepts (``opus_encoder_create``); other rates are refused by :func:`encode_ogg_opus`.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class OpusUnavailableError(RuntimeError):
    """Opus cannot be encoded here (no libsndfile, or one built without Ogg Opus)."""


def _import_soundfile(*, system: bool) -> Any:
    """Import ``soundfile`` on the system's libsndfile (``system``) or on the one bundled in its wheel."""
    for name in ("soundfile", "_soundfile", "_soundfile_data"):
        sys.modules.pop(name, None)
    if system:
        # soundfile loads ctypes.util.find_library("sndfile") when its bundled copy cannot be imported.
        sys.modules["_soundfile_data"] = None  # type: ignore[assignment]
    try:
        import soundfile
    finally:
        if system:
            sys.modules.pop("_soundfile_data", None)
    return soundfile


@functools.cache
def _soundfile() -> Any:
    """The ``soundfile`` module, once it is known to write Ogg Opus; raises :class:`OpusUnavailableError`.

    The system's libsndfile comes first (Debian's ``libsndfile1``, which PulseAudio depends on): the copy bundled in
    soundfile's Linux wheels is built with ``CFLAGS=-fPIC`` replacing the optimisation flags (libsndfile-binaries'
    ``linux_build.sh``), and its Opus encoder takes 2.5 times the CPU (measured on x86-64). The bundled copy is the
    fallback where the system has none, or one older than 1.0.29 (no Opus).
    """
    problems = []
    for system in (True, False):
        try:
            soundfile = _import_soundfile(system=system)
        except (ImportError, OSError) as exc:
            problems.append(f"{'system' if system else 'bundled'} libsndfile: {exc}")
            continue
        if "OPUS" in soundfile.available_subtypes("OGG"):
            return soundfile
        problems.append(f"libsndfile {soundfile.__libsndfile_version__} cannot write Ogg Opus (needs 1.0.29 or later)")
    raise OpusUnavailableError(
        "; ".join(problems) + ": install the kiosk's dependencies again (python-soundfile), or the system's libsndfile1"
    )


def unavailable_reason() -> str:
    """Why Opus cannot be encoded here, or ``""`` when it can (the check runs once per process)."""
    try:
        _soundfile()
    except OpusUnavailableError as exc:
        return str(exc)
    return ""


def encode_ogg_opus(pcm: bytes, sample_rate: int, channels: int = 1, *, bitrate_bps: int = BITRATE_BPS) -> bytes:
    """Encode int16 little-endian interleaved PCM as an Ogg Opus stream (whole, in memory).

    Blocking and CPU bound (per second of 16 kHz speech on one x86-64 core: about 15 ms of CPU with Debian's
    libsndfile, 50 ms with the copy bundled in soundfile's wheel): run it in a thread. ``sample_rate`` in Hz must
    be one of :data:`OPUS_RATES`; ``bitrate_bps`` in bit/s per channel (6000-256000: libsndfile's range,
    ``SFC_SET_COMPRESSION_LEVEL``).

    Raises :class:`OpusUnavailableError` when no encoder is available and :class:`ValueError` for a rate Opus
    does not take, a bitrate out of range, or PCM that is not whole frames.
    """
    sf = _soundfile()
    if sample_rate not in OPUS_RATES:
        raise ValueError(f"Opus takes {', '.join(map(str, OPUS_RATES))} Hz, not {sample_rate} Hz: resample first")
    if not 6000 <= bitrate_bps <= 256_000:
        raise ValueError(f"bitrate {bitrate_bps} bit/s is outside libsndfile's 6000-256000 bit/s for Opus")
    if channels < 1 or len(pcm) % (2 * channels):
        raise ValueError(f"{len(pcm)} bytes are not whole frames of {channels}-channel 16-bit PCM")
    samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels)
    # libsndfile maps its compression level linearly onto Opus' target bitrate: 0.0 is 256 kbit/s, 1.0 6 kbit/s.
    level = 1.0 - (bitrate_bps - 6000) / 250_000
    out = io.BytesIO()
    with sf.SoundFile(
        out,
        "w",
        samplerate=sample_rate,
        channels=channels,
        format="OGG",
        subtype="OPUS",
        compression_level=level,
    ) as stream:
        stream.write(samples)
    return out.getvalue()


class OggOpusWriter:
    """An Ogg Opus stream written a piece at a time (the first words encoded while the session connects).

    Blocking and CPU bound like :func:`encode_ogg_opus`: use it from one worker thread. Raises
    :class:`OpusUnavailableError` when no encoder is available and :class:`ValueError` for a rate Opus does not take.
    """

    def __init__(self, sample_rate: int, *, bitrate_bps: int = BITRATE_BPS) -> None:
        sf = _soundfile()
        if sample_rate not in OPUS_RATES:
            raise ValueError(f"Opus takes {', '.join(map(str, OPUS_RATES))} Hz, not {sample_rate} Hz: resample first")
        self.sample_rate = sample_rate
        self.samples = 0
        self._out = io.BytesIO()
        self._stream = sf.SoundFile(
            self._out,
            "w",
            samplerate=sample_rate,
            channels=1,
            format="OGG",
            subtype="OPUS",
            compression_level=1.0 - (bitrate_bps - 6000) / 250_000,
        )

    def write(self, samples: np.ndarray) -> None:
        """Encode mono int16 samples (a 1-D array) at :attr:`sample_rate`; raises libsndfile's ``RuntimeError``."""
        self._stream.write(samples.reshape(-1, 1))
        self.samples += len(samples)

    def finish(self) -> bytes:
        """Close the stream; the whole Ogg Opus file. Raises libsndfile's ``RuntimeError``."""
        self._stream.close()
        return self._out.getvalue()
