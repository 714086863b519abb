"""The audio engine the daemon wires: a facade over the devices, the microphone path, the mixer and the chimes.

:class:`~kiosk.audio.portaudio_devices.PortAudioDevices` opens, supervises and reopens the two PortAudio streams;
:class:`~kiosk.audio.mic_path.MicPath` takes each microphone frame through mute, the echo canceller, the pre-roll,
session captures and the VAD; the :class:`~kiosk.audio.mixer.Mixer` feeds the speaker. The package docstring
gives the API.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from kiosk.audio import aec, chimes
from kiosk.audio.capture import Capture
from kiosk.audio.frames import MicFrame
from kiosk.audio.health import AudioHealth, AudioHealthEvent
from kiosk.audio.mic_path import MicPath
from kiosk.audio.mixer import Mixer, MixerInput
from kiosk.audio.playback import Playback
from kiosk.audio.portaudio_devices import (
    CLOSE_BUDGET_S,
    CLOSE_TIMEOUT_S,
    MAX_HUNG_PER_DIRECTION,
    OPEN_TIMEOUT_S,
    RESCAN_TIMEOUT_S,
    START_TIMEOUT_S,
    DeviceHung,
    PortAudioDevices,
    StreamHooks,
)
from kiosk.audio.preroll import SessionCapture
from kiosk.audio.processing import Processor
from kiosk.audio.recovery import Direction
from kiosk.audio.streams import StreamFactory
from kiosk.audio.turns import TurnTimer
from kiosk.audio.vad import VadEvent, VadEventKind, VoiceActivity
from kiosk.config import AudioConfig, TriggerConfig
from kiosk.cpuwatch import CpuWatch

__all__ = [
    "AGENT",
    "BACKGROUND",
    "CHIMES",
    "CLOSE_BUDGET_S",
    "CLOSE_TIMEOUT_S",
    "MAX_HUNG_PER_DIRECTION",
    "OPEN_TIMEOUT_S",
    "RESCAN_TIMEOUT_S",
    "START_TIMEOUT_S",
    "AudioEngine",
    "DeviceHung",
]

#: Mixer input names the daemon feeds.
AGENT = "agent"
BACKGROUND = "background_audio"
CHIMES = "chimes"


class AudioEngine:
    """Mic in, speaker out, and everything between; see the package docstring for the API."""

    def __init__(
        self,
        *,
        audio: AudioConfig,
        trigger: TriggerConfig | None = None,
        stream_factory: StreamFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        max_pending_s: float = 0.5,
        processor: Processor | None = None,
        cpu_watch: CpuWatch | None = None,
    ) -> None:
        """Build the engine for ``audio`` (and ``trigger``'s VAD settings); nothing opens until :meth:`start`.

        ``stream_factory`` replaces PortAudio (tests: :class:`~kiosk.audio.fake.FakeStreamFactory`); ``clock`` (s)
        and ``rng`` drive the reopen backoff and the canceller's span; ``max_pending_s`` bounds the microphone
        blocks queued for the loop; ``processor`` replaces the APM; ``cpu_watch`` replaces the CPU shortage watch.
        """
        self.config = audio
        self._clock = clock
        self.mixer = Mixer(volume=audio.output_volume)
        # Kept, not looked up: the LED ring's thread reads its level while the loop may add other inputs.
        self._agent_input = self.mixer.add_input(AGENT)
        self.mixer.add_input(BACKGROUND)
        self.mixer.add_input(CHIMES, gain=audio.chime_volume, prime_ms=0, streaming=False)
        self.mixer.on_audio = self._wake_output
        self.mic = MicPath(
            audio=audio,
            trigger=trigger or TriggerConfig(),
            clock=clock,
            wake_speaker=self._wake_output,
            measured_latencies=self._measured_latencies,
            processor=processor,
        )
        hooks = StreamHooks(
            sink=self.mic.on_frame,
            processing=self.mic.processing,
            cancelling=self.mic.cancelling,
            mixer=self.mixer,
            reverse=self.mic.reverse,
            feeds_reverse=self.mic.feeds,
            on_audible=self.mic.on_audible,
            on_opened=self._device_opened,
        )
        #: Whether the kiosk is short of CPU (a CPU quota, a busy machine): then it degrades instead of failing.
        self.cpu = cpu_watch or CpuWatch()
        self.mic.short_of_cpu = self.cpu.short
        self.devices = PortAudioDevices(
            config=audio,
            hooks=hooks,
            stream_factory=stream_factory,
            clock=clock,
            rng=rng,
            max_pending_s=max_pending_s,
            short_of_cpu=self.cpu.short,
        )
        #: Turn latency: the visitor's end of speech to the agent's first sound at the speaker (armed while live).
        self.turns = TurnTimer(clock=clock, speaker_delay=self._speaker_delay)
        self._agent_input.listener = self.turns.agent_audio
        self.mic.subscribe_vad(self._time_turns)
        #: Set by the deafness watch: the microphone itself is muted (its own button; exact zeros on time).
        self.input_muted_by_device = False

    # -- the devices ----------------------------------------------------------------------------------

    @property
    def input(self) -> Direction:
        """The microphone: its stream (None while closed), device, counters and failures."""
        return self.devices.input

    @property
    def output(self) -> Direction:
        """The speaker: its stream (None while closed), device, counters and failures."""
        return self.devices.output

    @property
    def factory(self) -> StreamFactory:
        """The stream factory in use (after :meth:`start`)."""
        return self.devices.factory

    async def start(self, *, missing_ok: bool = False) -> None:
        """Open both devices and start supervising them.

        Raises:
            AudioDeviceError: a device cannot be opened, unless ``missing_ok``: then the failure is reported to
                health subscribers (:meth:`subscribe_health`, before this call) and the device is opened by the
                supervisor once it appears.
        """
        await self.devices.start(missing_ok=missing_ok)
        self.cpu.start(asyncio.get_running_loop())

    async def close(self) -> None:
        """End any session capture, stop supervising and close both streams."""
        for session in list(self.mic.sessions):
            session.close()
        await self.devices.close()
        await self.cpu.stop()

    async def open_direction(self, direction: Direction) -> None:
        """Open one direction's device (see :meth:`PortAudioDevices.open_direction`; raises AudioDeviceError)."""
        await self.devices.open_direction(direction)

    async def close_direction(self, direction: Direction, error: str | None) -> None:
        """Close one direction's stream (on the PortAudio thread), keeping its counters."""
        await self.devices.close_direction(direction, error)

    async def rescan(self) -> bool:
        """Refresh PortAudio's device list (every stream closed); False when it cannot be done now."""
        return await self.devices.rescan()

    def report(self, event: AudioHealthEvent) -> None:
        """Tell health subscribers about a device failure or recovery."""
        self.devices.report(event)

    def subscribe_health(self, callback: Callable[[AudioHealthEvent], None]) -> Callable[[], None]:
        """Call ``callback`` when a device fails or comes back, and now for a device that is down; returns the
        unsubscribe function."""
        return self.devices.subscribe_health(callback)

    def _device_opened(self) -> None:
        """A device opened: decide software AEC for the devices now open, and give the APM their latencies."""
        self.mic.set_echo(aec.choose(self.config.echo_cancellation, self.input.device, self.output.device))
        if self.input.latency_s is not None and self.output.latency_s is not None:
            self.mic.processor.set_latencies(self.input.latency_s, self.output.latency_s)

    def _measured_latencies(self) -> tuple[float | None, float | None]:
        mic, speaker = self.input.stream, self.output.stream
        if not isinstance(mic, Capture) or not isinstance(speaker, Playback):
            return None, None
        return mic.measured_latency, speaker.measured_latency

    def _speaker_delay(self) -> float:
        speaker = self.output.stream
        return speaker.ahead_s() if isinstance(speaker, Playback) else 0.0

    def _time_turns(self, event: VadEvent) -> None:
        if event.kind == VadEventKind.OFFSET and self.mic.vad.last_speech_t is not None:
            self.turns.speech_ended(self.mic.vad.last_speech_t)
        elif event.kind == VadEventKind.ONSET:
            self.turns.speech_began()

    def _wake_output(self) -> None:
        if isinstance(self.output.stream, Playback):
            self.output.stream.wake()

    # -- the microphone path --------------------------------------------------------------------------

    @property
    def echo(self) -> aec.EchoChoice:
        """Whether software echo cancellation runs, and why (see :mod:`kiosk.audio.aec`)."""
        return self.mic.echo

    @property
    def processor(self) -> Processor:
        """The WebRTC APM in use (rebuilt when the echo decision changes)."""
        return self.mic.processor

    @property
    def vad(self) -> VoiceActivity:
        """The voice activity detector (onset, offset, wake)."""
        return self.mic.vad

    @property
    def muted(self) -> bool:
        """Microphone privacy mute: while set, every mic frame is silence before it reaches anyone."""
        return self.mic.muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self.mic.muted = value

    @property
    def idle_processing(self) -> bool:
        """Whether voice activity is judged while no session is open (voice wake needs it)."""
        return self.mic.idle_processing

    @idle_processing.setter
    def idle_processing(self, value: bool) -> None:
        self.mic.idle_processing = value

    def processing(self) -> bool:
        """Whether mic frames go through the APM: only while a session captures or a frame subscriber listens."""
        return self.mic.processing()

    def subscribe_frames(self, callback: Callable[[MicFrame], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop with every processed mic frame; returns the unsubscribe function."""
        return self.mic.subscribe_frames(callback)

    def subscribe_raw_frames(self, callback: Callable[[MicFrame], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop with every raw (unprocessed) mic frame; returns the unsubscribe function."""
        return self.mic.subscribe_raw_frames(callback)

    def subscribe_vad(self, callback: Callable[[VadEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with every onset, offset and wake event; returns the unsubscribe function."""
        return self.mic.subscribe_vad(callback)

    @property
    def last_speech_t(self) -> float | None:
        """Monotonic time of the last speech frame inside a speech segment."""
        return self.mic.vad.last_speech_t

    def start_capture(self, since: float | None = None) -> SessionCapture:
        """Keep all mic audio from ``since`` (a press time, or a wake event's ``speech_start``) for a session."""
        return self.mic.start_capture(since)

    # -- the speaker ----------------------------------------------------------------------------------

    def agent_level(self) -> float:
        """How loud the agent's audio played last (0..1, see :attr:`MixerInput.level`); safe from any thread."""
        return self._agent_input.level

    def mixer_input(self, name: str) -> MixerInput:
        """The mixer input ``name`` (``AGENT``, ``BACKGROUND``, ``CHIMES`` or a new streaming one)."""
        return self.mixer.add_input(name)

    def play_chime(self, kind: chimes.Chime | str, *, always: bool = False) -> bool:
        """Play a chime unless chimes are off (``always``: a button's own feedback tone); returns whether it was
        queued."""
        if not self.config.chimes and not always:
            return False
        chime_input = self.mixer.inputs[CHIMES]
        chime_input.clear()
        chime_input.push(chimes.render(chimes.Chime(kind), level=0.9))
        self.mic.gate_wake_for(chimes.duration_s(chimes.Chime(kind)))
        return True

    def health(self) -> AudioHealth:
        """A snapshot of devices and counters."""
        cap = self.input.stream if isinstance(self.input.stream, Capture) else None
        play = self.output.stream if isinstance(self.output.stream, Playback) else None
        ins, outs = self.input.counters, self.output.counters
        return AudioHealth(
            input=self.devices.device_health(self.input),
            output=self.devices.device_health(self.output),
            input_overflows=ins.get("overflows", 0) + (cap.overflows if cap else 0),
            input_dropped_blocks=ins.get("dropped", 0) + (cap.dropped_blocks if cap else 0),
            output_underruns=outs.get("underruns", 0) + (play.underruns if play else 0),
            output_starved_blocks=outs.get("starved", 0) + (play.starved if play else 0),
            reverse_dropped_blocks=outs.get("reverse_dropped", 0) + (play.reverse_dropped if play else 0),
            processing_errors=self.processor.errors,
            stream_delay_ms=self.processor.delay_ms,
            speaking=self.vad.speaking,
            noise_floor_dbfs=self.vad.noise_floor_dbfs,
            mixer_starved={name: src.starved for name, src in self.mixer.inputs.items()},
            muted=self.muted,
            output_volume=self.mixer.volume,
            echo_cancellation=self.processor.echo_cancellation,
            input_muted_by_device=self.input_muted_by_device,
            cpu=self.cpu.status(),
            lean_frames=self.mic.lean_frames,
        )
