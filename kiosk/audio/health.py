"""What the engine reports about itself: a health snapshot with counters, and device events."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiosk.cpuwatch import CpuStatus
from kiosk.reasons import FailureReason


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """One direction (input or output): which device, whether it runs, and how often it failed."""

    direction: str
    device: str | None
    ok: bool
    samplerate: int | None
    channels: int | None
    latency_s: float | None
    blocks: int
    failures: int
    reopens: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class AudioHealth:
    """A snapshot of the whole audio engine for ``kiosk status`` and metrics."""

    input: DeviceHealth
    output: DeviceHealth
    input_overflows: int
    input_dropped_blocks: int
    #: PortAudio's output underflows: the device ran dry (ALSA's underrun, an xrun).
    output_underruns: int
    #: Speaker blocks the kiosk's queue had not filled when the callback came (played as silence).
    output_starved_blocks: int
    reverse_dropped_blocks: int
    processing_errors: int
    stream_delay_ms: int
    speaking: bool
    noise_floor_dbfs: float
    #: Per mixer input: times a streaming input ran dry while playing.
    mixer_starved: dict[str, int] = field(default_factory=dict)
    #: The microphone privacy mute, the output volume (0..1) and whether software echo cancellation runs.
    muted: bool = False
    output_volume: float = 0.0
    echo_cancellation: bool = True
    #: The microphone sends exact zeros on time: muted at the device itself (see kiosk.audio.deafness).
    input_muted_by_device: bool = False
    #: Whether the kiosk is short of CPU, and how often and how long its CPU quota throttled it.
    cpu: CpuStatus | None = None
    #: Session microphone frames that skipped the APM to save CPU (short of CPU, the speaker silent).
    lean_frames: int = 0

    @property
    def ok(self) -> bool:
        """True when both directions run."""
        return self.input.ok and self.output.ok


@dataclass(frozen=True, slots=True)
class AudioHealthEvent:
    """A device failed (``ok`` False, with ``reason``) or came back (``ok`` True)."""

    direction: str
    ok: bool
    message: str
    reason: FailureReason | None = None
