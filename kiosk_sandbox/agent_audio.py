"""Audio pieces of the scripted agent: bundled clips, turn detection, and a record of what it heard."""

from __future__ import annotations

import hashlib
import wave
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import webrtcvad

RATE = 16000
FRAME = 480  # 30 ms at 16 kHz, a frame size webrtcvad accepts
#: A received frame with a sample beyond this counts as audible (decoded digital silence stays within a few units).
AUDIBLE_PEAK = 16
#: How much of the live microphone stream the agent keeps as received.
LIVE_RECORD_S = 60.0
Samples = npt.NDArray[np.int16]


def load_clip(name: str) -> Samples:
    """Load a bundled 16 kHz mono 16-bit WAV clip from ``kiosk_sandbox/assets``."""
    data = resources.files("kiosk_sandbox").joinpath("assets", name).read_bytes()
    return read_wav_bytes(data)


def read_wav_bytes(data: bytes) -> Samples:
    """Decode 16 kHz mono 16-bit WAV bytes."""
    import io

    with wave.open(io.BytesIO(data)) as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (RATE, 1, 2):
            raise ValueError("sandbox clips must be 16 kHz mono 16-bit WAV")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)


def resample(samples: Samples, rate: int) -> Samples:
    """Resample ``samples`` from ``rate`` to 16 kHz (linear; enough for a record)."""
    if rate == RATE or len(samples) == 0:
        return samples
    count = round(len(samples) * RATE / rate)
    positions = np.linspace(0, len(samples) - 1, count)
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)


class TurnDetector:
    """Finds the visitor's turns in 30 ms frames: speech starts on mostly voiced frames, ends after a pause."""

    def __init__(self, *, aggressiveness: int = 2, start_frames: int = 5, end_frames: int = 20) -> None:
        """Start a turn after ``start_frames`` voiced of the last 8 frames; end it after ``end_frames`` unvoiced."""
        self._vad = webrtcvad.Vad(aggressiveness)
        self._start = start_frames
        self._end = end_frames
        self._window: list[tuple[Samples, bool]] = []
        self._turn: list[Samples] = []
        self._silent = 0
        self.voiced_frames = 0

    @property
    def in_turn(self) -> bool:
        """Whether the visitor is speaking now."""
        return bool(self._turn)

    def feed(self, frame: Samples) -> Samples | None:
        """Feed one 30 ms frame; return the whole turn when it just ended."""
        voiced = bool(self._vad.is_speech(frame.tobytes(), RATE))
        if voiced:
            self.voiced_frames += 1
        if not self._turn:
            self._window = [*self._window[-7:], (frame, voiced)]
            if sum(v for _, v in self._window) >= self._start:
                self._turn = [f for f, _ in self._window]
                self._window = []
                self._silent = 0
            return None
        self._turn.append(frame)
        self._silent = 0 if voiced else self._silent + 1
        if self._silent < self._end:
            return None
        turn = np.concatenate(self._turn[: -self._end + 3])
        self._turn = []
        return turn


class Hearing:
    """Everything the agent heard in a session (pre-connect audio first, then live audio)."""

    def __init__(self) -> None:
        """Start empty."""
        self.preconnect: list[Samples] = []
        self.live: list[Samples] = []
        self.stream: list[Samples] = []
        self._stream_samples = 0

    def record_stream(self, samples: Samples) -> None:
        """Keep received live samples as they came, silence included, up to ``LIVE_RECORD_S`` seconds."""
        room = int(LIVE_RECORD_S * RATE) - self._stream_samples
        if room > 0 and len(samples):
            kept = samples[:room]
            self.stream.append(kept)
            self._stream_samples += len(kept)

    @property
    def stream_seconds(self) -> float:
        """Seconds of live stream kept."""
        return self._stream_samples / RATE

    def all(self) -> Samples:
        """Every heard sample at 16 kHz, pre-connect first."""
        parts = self.preconnect + self.live
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def write_wav(self, path: Path) -> Path:
        """Write everything heard to ``path`` as 16 kHz mono WAV."""
        return write_wav(path, self.all())

    def write_stream(self, path: Path) -> Path:
        """Write the live stream as received to ``path`` as 16 kHz mono WAV."""
        return write_wav(path, np.concatenate(self.stream) if self.stream else np.zeros(0, np.int16))


def write_wav(path: Path, samples: Samples) -> Path:
    """Write 16 kHz mono samples to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


def envelope(samples: Samples, *, step_s: float = 0.25) -> str:
    """A loudness contour: one digit per ``step_s`` (0 = below -60 dBFS, 9 = near full scale)."""
    step = int(RATE * step_s)
    digits = []
    for start in range(0, len(samples) - step + 1, step):
        rms = float(np.sqrt(np.mean(samples[start : start + step].astype(np.float64) ** 2)))
        db = 20 * np.log10(max(rms, 1.0) / 32768.0)
        digits.append(str(int(np.clip((db + 60) / 6.0, 0, 9))))
    return "".join(digits)


def fingerprint(samples: Samples) -> str:
    """A short fingerprint of heard audio: its duration, a hash of its loudness contour, and the contour's head."""
    contour = envelope(samples)
    digest = hashlib.sha256(contour.encode()).hexdigest()[:12]
    return f"{len(samples) / RATE:.2f}s:{digest}:{contour[:40]}"
