"""WebRTC audio processing (AEC, NS, HPF, AGC) through LiveKit's ``AudioProcessingModule``, then the echo gate.

The echo gate. AEC3 takes 30-40 dB off the speaker's echo, which leaves a residue around -60 to -70 dBFS while the
agent speaks, and it does not touch render audio it judges too quiet to be echo (the agent's low "thinking" sound
comes back nearly as it left). Fed to the agent, that residue is enough for a voice activity detector to call it
speech, and the agent answers its own voice. So while the speaker played sound within the last
``ECHO_TAIL_MS`` (the longest echo path AEC3 searches, plus a room's reverberation), a processed frame quieter than
``audio.echo_gate_dbfs`` is attenuated by ``GATE_ATTENUATION_DB``. The visitor talking over the agent is far
louder than the gate and passes; with the speaker silent the gate is open, so quiet speech reaches the agent whole.
"""

from __future__ import annotations

import logging

import numpy as np
from livekit import rtc

from kiosk.audio.frames import FRAME_MS, FRAME_SAMPLES, Pcm, dbfs, to_rtc
from kiosk.config import AudioConfig
from kiosk.repeat import RepeatedFailure

log = logging.getLogger(__name__)

#: A measured echo path delay is applied once it moved this far from the one in use (ms): callback timings jitter.
DELAY_STEP_MS = 5
#: The echo path delays WebRTC's ``set_stream_delay_ms`` takes without an error (ms): it clamps anything outside
#: [0, 500] and reports ``kBadStreamParameterWarning``, which LiveKit's APM raises as "Failed to set stream delay".
MAX_STREAM_DELAY_MS = 500
#: At most this many silent frames even out the canceller's two streams (1 s): a larger difference is not a phase
#: but a device that stopped, and AEC3 has to find the delay again in any case.
MAX_MAKE_UP_FRAMES = 100
#: A speaker frame louder than this counts as sound the microphone may hear back (dBFS): below it, even at full
#: coupling, the echo would sit under any room's noise.
SPEAKER_ACTIVE_DBFS = -75.0
#: How long after the last such speaker frame the gate stays armed (ms): the 500 ms of echo path delay AEC3's delay
#: estimator searches (``MAX_STREAM_DELAY_MS``), plus 250 ms of reverberation.
ECHO_TAIL_MS = 750
#: ``audio.echo_gate_dbfs`` at this level turns the gate off (no frame is quieter than digital silence).
GATE_OFF_DBFS = -120.0
#: How much the echo gate takes off a frame below ``audio.echo_gate_dbfs`` (dB).
GATE_ATTENUATION_DB = 40.0


class Processor:
    """Processes 10 ms mic frames against the 10 ms frames the speaker played (the reverse stream)."""

    def __init__(self, config: AudioConfig, *, echo_cancellation: bool | None = None) -> None:
        """Build the APM from ``config``; ``echo_cancellation`` (when given) overrides ``config.echo_cancellation``.

        ``"auto"`` counts as on until the engine decides it once the devices are known (:mod:`kiosk.audio.aec`).
        """
        aec = (config.echo_cancellation is not False) if echo_cancellation is None else echo_cancellation
        self.echo_cancellation = aec
        self.enabled = any((aec, config.noise_suppression, config.high_pass_filter, config.auto_gain))
        self._apm = (
            rtc.AudioProcessingModule(
                echo_cancellation=aec,
                noise_suppression=config.noise_suppression,
                high_pass_filter=config.high_pass_filter,
                auto_gain_control=config.auto_gain,
            )
            if self.enabled
            else None
        )
        self.delay_ms = 0
        # The delay the APM was last told: WebRTC keeps it, so it is set again only when it changes (one FFI
        # request per change instead of one per frame).
        self._applied_delay: int | None = None
        self.errors = 0
        self._capture_failures = RepeatedFailure(log, "audio processing of a microphone frame (passed through)")
        self._reverse_failures = RepeatedFailure(log, "reverse stream processing of a speaker frame")
        self._logged_delay: int | None = None
        self._gate_dbfs = config.echo_gate_dbfs
        self._gate_gain = 10 ** (-GATE_ATTENUATION_DB / 20)
        #: Microphone frames left for which the echo gate is armed (counted in frames: the two streams keep pace).
        self._armed_frames = 0
        #: Microphone frames the echo gate attenuated.
        self.gated = 0

    def set_latencies(self, input_s: float, output_s: float) -> None:
        """Set the echo path delay from PortAudio's reported input and output latencies."""
        self.delay_ms = _in_range(round((input_s + output_s) * 1000))
        if self._logged_delay != self.delay_ms:
            log.info(
                "echo path delay %d ms (input latency %.1f ms, output latency %.1f ms)",
                self.delay_ms,
                input_s * 1000,
                output_s * 1000,
            )
            self._logged_delay = self.delay_ms

    def follow_latencies(self, input_s: float, output_s: float) -> bool:
        """Take the echo path delay from latencies measured in the callbacks (PortAudio's ``time_info``), when it
        moved at least :data:`DELAY_STEP_MS` from the one in use; returns whether it changed."""
        delay = _in_range(round((input_s + output_s) * 1000))
        if abs(delay - self.delay_ms) < DELAY_STEP_MS:
            return False
        log.debug("echo path delay %d ms -> %d ms (measured in the callbacks)", self.delay_ms, delay)
        self.delay_ms = delay
        return True

    def process(self, pcm: Pcm) -> Pcm:
        """Return the processed copy of one 10 ms mic frame."""
        if self._apm is None:
            return pcm
        frame = to_rtc(pcm)
        try:
            if self.echo_cancellation and self._applied_delay != self.delay_ms:
                self._apm.set_stream_delay_ms(self.delay_ms)
                self._applied_delay = self.delay_ms
            self._apm.process_stream(frame)
        except RuntimeError:
            self.errors += 1
            self._capture_failures.failed()
            return pcm
        self._capture_failures.succeeded()
        return self._gate(np.frombuffer(frame.data, dtype=np.int16).copy())

    def _gate(self, out: Pcm) -> Pcm:
        """The echo gate (see the module's notes): ``out`` as is, or attenuated when it is residual echo."""
        if self._armed_frames <= 0:
            return out
        self._armed_frames -= 1
        if dbfs(out) >= self._gate_dbfs:
            return out
        self.gated += 1
        return (out * self._gate_gain).astype(np.int16)

    def new_span(self, lag: int) -> None:
        """The canceller's span opens (a session starts processing): the echo gate starts disarmed, since the
        speaker sound that armed it came before the idle pause, not within :data:`ECHO_TAIL_MS` (its count only runs
        down on processed frames); then the last span's two counts are evened out (:meth:`make_up`)."""
        self._armed_frames = 0
        self.make_up(lag)

    def make_up(self, frames: int) -> None:
        """Feed ``|frames|`` silent 10 ms frames to the echo canceller: to the reverse stream when ``frames`` is
        positive (the microphone got more), through capture with the output discarded when it is negative."""
        if self._apm is None or not self.echo_cancellation or frames == 0:
            return
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        for _ in range(min(abs(frames), MAX_MAKE_UP_FRAMES)):
            if frames > 0:
                self.reverse(silence)
            else:
                self.process(silence)

    def reverse(self, pcm: Pcm) -> None:
        """Feed one 10 ms frame exactly as the speaker played it to the echo canceller."""
        if self._apm is None or not self.echo_cancellation:
            return
        if self._gate_dbfs > GATE_OFF_DBFS and dbfs(pcm) > SPEAKER_ACTIVE_DBFS:
            self._armed_frames = ECHO_TAIL_MS // FRAME_MS
        try:
            self._apm.process_reverse_stream(to_rtc(pcm))
        except RuntimeError:
            self.errors += 1
            self._reverse_failures.failed()
        else:
            self._reverse_failures.succeeded()


def _in_range(delay_ms: int) -> int:
    """``delay_ms`` within what WebRTC's ``set_stream_delay_ms`` accepts (``MAX_STREAM_DELAY_MS``)."""
    return min(MAX_STREAM_DELAY_MS, max(0, delay_ms))
