"""WAV files as a microphone and a speaker, paced in real time, for ``kiosk demo`` on a machine with no sound card.

:class:`WavStreamFactory` implements the audio engine's ``StreamFactory``: input device 0 plays a WAV file (each
:meth:`WavStreamFactory.cue` starts it again from the top, then silence follows, as a visitor who speaks once),
output device 1 records everything the kiosk plays into a 48 kHz mono WAV file. A thread per stream calls the
engine's callback once per block at the real-time rate, as PortAudio would.
"""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kiosk.audio import DeviceInfo
from kiosk.audio.streams import StreamCallback
from kiosk.errors import AudioDeviceError

OUTPUT_RATE = 48000


def read_wav(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """Read a 16-bit PCM WAV as mono samples and its rate; raise ``AudioDeviceError`` naming the problem."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise AudioDeviceError(f"{path}: need 16-bit PCM WAV, got {8 * wav.getsampwidth()}-bit")
            rate, channels = wav.getframerate(), wav.getnchannels()
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    except (OSError, wave.Error, EOFError) as exc:
        raise AudioDeviceError(f"{path}: cannot read as WAV ({exc}); convert it: sox IN -b 16 OUT.wav") from None
    mono = data.reshape(-1, channels)[:, 0].copy() if channels > 1 else data.copy()
    return mono.astype(np.int16), rate


class _PacedStream:
    """Calls ``callback`` every block at real-time pace on its own thread."""

    def __init__(self, *, blocksize: int, samplerate: int, channels: int, tick: Callable[[], None]) -> None:
        self._period = blocksize / samplerate
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wav-stream", daemon=True)
        self.latency = self._period
        self.measured_latency: float | None = None

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=1)

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            self._tick()
            due += self._period
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -1.0:
                due = time.monotonic()  # fell far behind (machine suspended): resynchronise


class WavStreamFactory:
    """A ``StreamFactory`` whose microphone is a WAV file and whose speaker writes one."""

    def __init__(self, *, mic_wav: Path | None, speaker_wav: Path | None) -> None:
        if mic_wav is not None:
            self._speech, self._rate = read_wav(mic_wav)
        else:
            self._speech, self._rate = np.zeros(0, dtype=np.int16), 16000
        self._speaker_path = speaker_wav
        self._lock = threading.Lock()
        self._position = len(self._speech)
        self._writer: wave.Wave_write | None = None
        self.cues = 0

    def cue(self, speech: npt.NDArray[np.int16] | None = None) -> None:
        """Start the microphone WAV again from its first sample (a visitor starts speaking).

        ``speech`` (mono int16 at the WAV's rate) replaces what the microphone says from now on.
        """
        with self._lock:
            if speech is not None:
                self._speech = speech
            self._position = 0
            self.cues += 1

    def devices(self) -> list[DeviceInfo]:
        """The two virtual devices."""
        return [
            DeviceInfo(0, "wav microphone", "wav", 1, 0, float(self._rate)),
            DeviceInfo(1, "wav speaker", "wav", 0, 1, float(OUTPUT_RATE)),
        ]

    def default_devices(self) -> tuple[int | None, int | None]:
        """Input 0, output 1."""
        return 0, 1

    def rescan(self) -> None:
        """Nothing to rescan."""

    def supports(self, *, kind: str, device: int, samplerate: int, channels: int) -> bool:
        """Only each virtual device's own rate."""
        return samplerate == (self._rate if kind == "input" else OUTPUT_RATE)

    def open(
        self,
        *,
        kind: str,
        device: int,
        samplerate: int,
        channels: int,
        blocksize: int,
        callback: StreamCallback,
        on_finished: Callable[[], None],
    ) -> _PacedStream:
        """Open the WAV microphone (kind "input") or the WAV speaker (kind "output")."""
        block = np.zeros((blocksize, channels), dtype=np.int16)
        if kind == "input":

            def tick() -> None:
                block[:] = 0
                with self._lock:
                    chunk = self._speech[self._position : self._position + blocksize]
                    self._position += len(chunk)
                block[: len(chunk), 0] = chunk
                callback(block, False)

        else:
            if self._speaker_path is not None and self._writer is None:
                self._writer = wave.open(str(self._speaker_path), "wb")  # noqa: SIM115 - closed in close_speaker
                self._writer.setnchannels(1)
                self._writer.setsampwidth(2)
                self._writer.setframerate(samplerate)

            def tick() -> None:
                block[:] = 0
                callback(block, False)
                if self._writer is not None:
                    self._writer.writeframes(block[:, 0].astype("<i2").tobytes())

        return _PacedStream(blocksize=blocksize, samplerate=samplerate, channels=channels, tick=tick)

    def close_speaker(self) -> None:
        """Finish the speaker WAV file (its header holds the length)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
