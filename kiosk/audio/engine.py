"""The audio engine the daemon wires: capture, processing, voice activity, pre-roll, mixer and chimes."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from kiosk.audio import aec, chimes
from kiosk.audio.capture import Capture
from kiosk.audio.devices import at_rate, resolve, stream_params
from kiosk.audio.frames import SAMPLE_RATE, MicFrame, Pcm
from kiosk.audio.health import AudioHealth, AudioHealthEvent, DeviceHealth
from kiosk.audio.mixer import Mixer, MixerInput
from kiosk.audio.playback import Playback
from kiosk.audio.preroll import PreRoll, SessionCapture
from kiosk.audio.processing import Processor
from kiosk.audio.recovery import Direction
from kiosk.audio.span import CancellerSpan
from kiosk.audio.streams import StreamFactory
from kiosk.audio.supervisor import Supervisor
from kiosk.audio.vad import VadEvent, VoiceActivity
from kiosk.audio.worker import STUCK, PortAudioThread
from kiosk.config import AudioConfig, TriggerConfig
from kiosk.errors import AudioDeviceError
from kiosk.reasons import FailureReason

log = logging.getLogger(__name__)

#: Mixer input names the daemon feeds.
AGENT = "agent"
BACKGROUND = "background_audio"
CHIMES = "chimes"
#: Wake stays gated this long after the kiosk's own output was last audible (room echo tail).
WAKE_GATE_TAIL_S = 0.5
#: Processed frames between two reads of the latencies measured in the callbacks (0.5 s).
DELAY_EVERY_FRAMES = 50
#: The VAD judges 30 ms frames (at 16 kHz): a third of the calls of 10 ms frames.
VAD_FRAME_MS = 30
#: How long closing the streams may take at shutdown before a hanging device is left behind (s).
CLOSE_BUDGET_S = 10.0

T = TypeVar("T")


def _nothing() -> None:
    """A PortAudio-thread call that returns once every call before it has."""


def _subscribe(subscribers: list[T], callback: T) -> Callable[[], None]:
    subscribers.append(callback)
    return lambda: subscribers.remove(callback) if callback in subscribers else None


class AudioEngine:
    """Mic in, speaker out, and everything between; see the package docstring for the API."""

    def __init__(
        self,
        *,
        audio: AudioConfig,
        trigger: TriggerConfig | None = None,
        stream_factory: StreamFactory | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        max_pending_s: float = 0.5,
        processor: Processor | None = None,
    ) -> None:
        trigger = trigger or TriggerConfig()
        self.config = audio
        self._factory = stream_factory
        self._loop = loop
        self._clock = clock
        self._rng = rng
        self._max_pending_s = max_pending_s
        #: Whether software echo cancellation runs, and why (``audio.echo_cancellation``; "auto" decides once both
        #: devices are open, see :mod:`kiosk.audio.aec`).
        self.echo = aec.choose(audio.echo_cancellation, None, None)
        self.processor = processor or Processor(audio, echo_cancellation=self.echo.enabled)
        #: Microphone privacy mute: while set, every mic frame is silence before it reaches the pre-roll, a session
        #: or voice wake.
        self.muted = False
        #: Whether voice activity is judged while no session is open (voice wake needs it). Idle frames are never
        #: processed: the APM and the reverse stream run only while a session captures audio or a frame subscriber
        #: listens; idle frames go raw into the pre-roll and to the VAD.
        self.idle_processing = True
        self.vad = VoiceActivity(
            aggressiveness=trigger.vad_aggressiveness,
            onset_ms=audio.speech_onset_ms,
            offset_ms=audio.speech_offset_ms,
            wake_ms=trigger.wake_min_speech_ms,
            frame_ms=VAD_FRAME_MS,
        )
        self._vad_parts: list[Pcm] = []
        self._vad_samples = 0
        self._processed = 0
        self._span = CancellerSpan()
        self.mixer = Mixer(volume=audio.output_volume)
        # Kept, not looked up: the LED ring's thread reads its level while the loop may add other inputs.
        self._agent_input = self.mixer.add_input(AGENT)
        self.mixer.add_input(BACKGROUND)
        self.mixer.add_input(CHIMES, gain=audio.chime_volume, prime_ms=0, streaming=False)
        self.mixer.on_audio = self._wake_output
        self._preroll = PreRoll(audio.pre_roll_ms)
        self._sessions: list[SessionCapture] = []
        self._frame_subscribers: list[Callable[[MicFrame], None]] = []
        self._raw_subscribers: list[Callable[[MicFrame], None]] = []
        self._vad_subscribers: list[Callable[[VadEvent], None]] = []
        self._health_subscribers: list[Callable[[AudioHealthEvent], None]] = []
        self.input = Direction("input")
        self.output = Direction("output")
        self._supervisor: Supervisor | None = None
        self._started = False
        # Every PortAudio call that can block (device queries, open, start, close, rescan) runs here, one at a
        # time (PortAudio's API is not thread-safe), never on the event loop: a USB device that hangs must not
        # stop the loop, its watchdog pings or a session's broker end.
        self._portaudio = PortAudioThread()

    async def portaudio(self, call: Callable[..., T], *args: object) -> T:
        """Run a blocking PortAudio call on the engine's PortAudio thread."""
        return await self._portaudio.run(call, *args)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, *, missing_ok: bool = False) -> None:
        """Open both devices and start supervising them.

        Raises:
            AudioDeviceError: a device cannot be opened, unless ``missing_ok``: then the failure is reported to
                health subscribers (:meth:`subscribe_health`, before this call) and the device is opened by the
                supervisor once it appears.
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self._factory is None:
            from kiosk.audio.streams import SoundDeviceFactory

            self._factory = await self.portaudio(SoundDeviceFactory)
        for direction in (self.input, self.output):
            try:
                await self.open_direction(direction)
            except AudioDeviceError as exc:
                if not missing_ok:
                    await self._close_streams()
                    raise
                self._missing_at_start(direction, exc)
        self._supervisor = Supervisor(engine=self, clock=self._clock, rng=self._rng)
        self._supervisor.start(self._loop)
        self._started = True

    async def close(self) -> None:
        """Stop supervising, close both streams and end any session capture."""
        if self._supervisor is not None:
            await self._supervisor.stop()
        for session in list(self._sessions):
            session.close()
        try:
            # Closed, and every earlier PortAudio call (a reopen attempt still under way) has returned.
            await asyncio.wait_for(self._close_streams_and_drain(), CLOSE_BUDGET_S)
        except TimeoutError:
            log.warning(
                "PortAudio did not close the streams within %.0f s (a device hangs); leaving them", CLOSE_BUDGET_S
            )
            STUCK.set()
        self._portaudio.stop()
        self._started = False

    async def _close_streams_and_drain(self) -> None:
        await self._close_streams()
        await self.portaudio(_nothing)

    async def _close_streams(self) -> None:
        for direction in (self.input, self.output):
            await self.close_direction(direction, None)

    def _missing_at_start(self, direction: Direction, exc: AudioDeviceError) -> None:
        message = str(exc).splitlines()[0]
        log.error("audio %s unavailable at start (%s); running without it and trying again", direction.name, message)
        direction.last_error = message
        direction.failures += 1
        direction.schedule_retry(self._clock(), max_s=self.config.reopen_backoff_max_s, rng=self._rng)
        self.report(
            AudioHealthEvent(direction=direction.name, ok=False, message=message, reason=FailureReason.AUDIO_DEVICE)
        )

    # -- devices (called by the supervisor too) ----------------------------------------------------------

    async def open_direction(self, direction: Direction) -> None:
        """Resolve and open one direction's device; raise ``AudioDeviceError`` when it cannot be opened.

        PortAudio's part runs on the PortAudio thread; the loop-side parts of the stream start on the loop.
        """
        stream = await self.portaudio(self._open_stream, direction)
        stream.prime()
        try:
            await self.portaudio(stream.start_stream)
        except Exception as exc:
            stream.stop()
            await self.portaudio(stream.close)
            raise AudioDeviceError(
                f"cannot start {direction.name} device {stream.params.device.name!r}: {exc}"
            ) from exc
        params = stream.params
        direction.stream = stream
        direction.failed = None
        direction.opened_t = self._clock()
        direction.device = params.device.name
        direction.samplerate = params.samplerate
        direction.channels = params.channels
        direction.latency_s = stream.latency
        log.info(
            "audio %s: %r at %d Hz, %d channel(s), latency %.1f ms",
            direction.name,
            params.device.name,
            params.samplerate,
            params.channels,
            stream.latency * 1000,
        )
        self._choose_echo()
        if self.input.latency_s is not None and self.output.latency_s is not None:
            self.processor.set_latencies(self.input.latency_s, self.output.latency_s)

    def _choose_echo(self) -> None:
        """Decide software AEC for the devices now open; a changed decision rebuilds the processor."""
        choice = aec.choose(self.config.echo_cancellation, self.input.device, self.output.device)
        if choice == self.echo:
            return
        self.echo = choice
        log.info("software echo cancellation %s", choice.describe())
        if choice.enabled != self.processor.echo_cancellation:
            self.processor = Processor(self.config, echo_cancellation=choice.enabled)

    def _open_stream(self, direction: Direction) -> Capture | Playback:
        """PortAudio thread: find the device and open (not start) its stream."""
        assert self._factory is not None and self._loop is not None
        factory, loop = self._factory, self._loop
        ref = self.config.input_device if direction.name == "input" else self.config.output_device
        defaults = factory.default_devices()
        default = defaults[0] if direction.name == "input" else defaults[1]
        device = resolve(ref, direction.name, factory.devices(), default)
        params = stream_params(device, direction.name, input_channel=self.config.input_channel)
        params = at_rate(params, direction.name, SAMPLE_RATE, factory.supports)

        def finished() -> None:
            if direction.stream is stream:
                direction.failed = "the stream stopped"

        stream: Capture | Playback
        if direction.name == "input":
            stream = Capture(
                factory=factory,
                loop=loop,
                params=params,
                channel=self.config.input_channel,
                sink=self._on_mic_frame,
                idle=self._idle,
                on_finished=finished,
                clock=self._clock,
                max_pending_s=self._max_pending_s,
            )
        else:
            stream = Playback(
                factory=factory,
                loop=loop,
                params=params,
                mixer=self.mixer,
                reverse=self._reverse,
                needs_reverse=self.processing,
                feeds_reverse=self.feeds,
                on_audible=self._on_audible,
                on_finished=finished,
                clock=self._clock,
            )
        return stream

    async def close_direction(self, direction: Direction, error: str | None) -> None:
        """Close one direction's stream (on the PortAudio thread), keeping its counters."""
        stream = direction.stream
        if stream is None:
            return
        direction.stream = None
        stream.stop()
        if isinstance(stream, Capture):
            direction.add_counters(
                {"overflows": stream.overflows, "dropped": stream.dropped_blocks, "blocks": stream.blocks}
            )
        elif isinstance(stream, Playback):
            direction.add_counters(
                {
                    "underruns": stream.underruns,
                    "underflows": stream.underflows,
                    "blocks": stream.blocks,
                    "reverse_dropped": stream.reverse_dropped,
                }
            )
        started = time.monotonic()
        try:
            await self.portaudio(stream.close)
            log.debug("closed the %s stream in %.0f ms", direction.name, (time.monotonic() - started) * 1000)
        except (OSError, RuntimeError) as exc:
            # A vanished device may refuse to close cleanly; it is gone either way.
            log.warning("closing the %s stream failed: %s", direction.name, exc)
        if error is not None:
            direction.last_error = error

    def report(self, event: AudioHealthEvent) -> None:
        """Tell health subscribers about a device failure or recovery."""
        self._emit(self._health_subscribers, event)

    @property
    def factory(self) -> StreamFactory:
        """The stream factory in use (after :meth:`start`)."""
        assert self._factory is not None
        return self._factory

    # -- the mic path ----------------------------------------------------------------------------------

    def processing(self) -> bool:
        """Whether mic frames go through the APM and the speaker feeds its reverse stream: only while a session
        captures audio or a frame subscriber listens."""
        return bool(self._sessions or self._frame_subscribers)

    def _idle(self) -> bool:
        return not self.processing()

    def feeds(self, t: float) -> bool:
        """Whether the echo canceller gets the frame captured or played at ``t`` (the engine's clock, s); see
        :mod:`kiosk.audio.span`."""
        return self._span.holds(t)

    def _mark_span(self) -> None:
        """Open or close the echo canceller's span now, when processing just started or stopped; on opening, make
        the last span's two frame counts equal with silent frames (a few FFI calls at a press)."""
        lag = self._span.follow(self.processing(), self._clock())
        if lag is not None:
            self.processor.new_span(lag)

    def _end_session(self, session: SessionCapture) -> None:
        self._sessions.remove(session)
        self._mark_span()

    def _cancel(self, pcm: Pcm) -> Pcm:
        """One microphone frame of the span through the APM, counted for the span's balance."""
        self._span.mic_frames += 1
        return self.processor.process(pcm)

    def _reverse(self, pcm: Pcm) -> None:
        self._span.speaker_frames += 1
        self.processor.reverse(pcm)

    def _wake_output(self) -> None:
        if isinstance(self.output.stream, Playback):
            self.output.stream.wake()

    def _on_mic_frame(self, pcm: Pcm, t: float) -> None:
        if self._raw_subscribers:
            # what the device delivered (the deafness watch judges the microphone, muted or not)
            self._emit(self._raw_subscribers, MicFrame(t=t, pcm=pcm))
        if self.muted:
            pcm = np.zeros_like(pcm)
        fed = self.feeds(t)
        if not self.processing():
            if fed:
                self._cancel(pcm)  # the canceller's last frame of a span that just ended: output unused
            # Idle: the pre-roll keeps raw audio (no echo to cancel while the kiosk is silent, and the canceller's
            # state from the last session is kept for the next one); the VAD only runs for voice wake.
            self._preroll.push(MicFrame(t=t, pcm=pcm))
            if self.idle_processing:
                self._judge(pcm, t)
            return
        if fed:
            self._processed += 1
            if self._processed % DELAY_EVERY_FRAMES == 1:
                self._follow_delay()
            processed = self._cancel(pcm)
            # Muted, the canceller still gets its frame (zeros, to keep its count) but nothing of its output is sent:
            # from silence in, AEC3's linear filter puts out its own estimate of the speaker's echo.
            pcm = pcm if self.muted else processed
        # else: captured before the span began (it reached the loop late): it goes to the session raw, like the
        # pre-roll it follows.
        frame = MicFrame(t=t, pcm=pcm)
        self._preroll.push(frame)
        for session in self._sessions:
            session.feed(frame)
        self._emit(self._frame_subscribers, frame)
        self._judge(frame.pcm, t)

    def _follow_delay(self) -> None:
        """Set the echo path delay from the latencies the callbacks measured, where the host API reports them."""
        mic, speaker = self.input.stream, self.output.stream
        if not isinstance(mic, Capture) or not isinstance(speaker, Playback):
            return
        measured_in, measured_out = mic.measured_latency, speaker.measured_latency
        if measured_in is not None and measured_out is not None:
            self.processor.follow_latencies(measured_in, measured_out)

    def _judge(self, pcm: Pcm, t: float) -> None:
        """Collect 10 ms frames into the VAD's frame size and judge each full one."""
        self._vad_parts.append(pcm)
        self._vad_samples += len(pcm)
        if self._vad_samples < self.vad.frame_samples:
            return
        block = np.concatenate(self._vad_parts)
        self._vad_parts.clear()
        self._vad_samples = 0
        for event in self.vad.push(block, t):
            self._emit(self._vad_subscribers, event)

    def _on_audible(self) -> None:
        self.vad.gate_wake(self._clock() + WAKE_GATE_TAIL_S + self.processor.delay_ms / 1000)

    def _emit(self, subscribers: list[Callable[[T], None]], item: T) -> None:
        for callback in list(subscribers):
            try:
                callback(item)
            except Exception:
                log.exception("an audio subscriber failed on %r", type(item).__name__)

    # -- the daemon's API --------------------------------------------------------------------------------

    def subscribe_frames(self, callback: Callable[[MicFrame], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop with every processed mic frame; returns the unsubscribe function."""
        unsubscribe = _subscribe(self._frame_subscribers, callback)
        self._wake_output()
        self._mark_span()

        def done() -> None:
            unsubscribe()
            self._mark_span()

        return done

    def subscribe_raw_frames(self, callback: Callable[[MicFrame], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop with every raw (unprocessed) mic frame; returns the unsubscribe function."""
        return _subscribe(self._raw_subscribers, callback)

    def subscribe_vad(self, callback: Callable[[VadEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with every onset, offset and wake event; returns the unsubscribe function."""
        return _subscribe(self._vad_subscribers, callback)

    def subscribe_health(self, callback: Callable[[AudioHealthEvent], None]) -> Callable[[], None]:
        """Call ``callback`` when a device fails or comes back, and now for a device that is down; returns the
        unsubscribe function."""
        unsubscribe = _subscribe(self._health_subscribers, callback)
        for direction in (self.input, self.output):
            if self._started and direction.stream is None and direction.last_error is not None:
                message = f"audio {direction.name} unavailable: {direction.last_error}"
                callback(
                    AudioHealthEvent(
                        direction=direction.name, ok=False, message=message, reason=FailureReason.AUDIO_DEVICE
                    )
                )
        return unsubscribe

    @property
    def last_speech_t(self) -> float | None:
        """Monotonic time of the last speech frame inside a speech segment."""
        return self.vad.last_speech_t

    def start_capture(self, since: float | None = None) -> SessionCapture:
        """Keep all mic audio from ``since`` (a press time, or a wake event's ``speech_start``) for a session."""
        start = self._clock() if since is None else since
        session = SessionCapture(
            start=start,
            backlog=self._preroll.since(start),
            max_s=self.config.max_preconnect_s,
            on_close=self._end_session,
        )
        self._sessions.append(session)
        # The reverse stream starts now, a connect's length before the agent's first words; the speaker is woken
        # before the span opens, so no block it plays inside the span goes unrecorded.
        self._wake_output()
        self._mark_span()
        return session

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
        self.vad.gate_wake(self._clock() + chimes.duration_s(chimes.Chime(kind)) + WAKE_GATE_TAIL_S)
        return True

    def health(self) -> AudioHealth:
        """A snapshot of devices and counters."""
        cap = self.input.stream if isinstance(self.input.stream, Capture) else None
        play = self.output.stream if isinstance(self.output.stream, Playback) else None
        ins, outs = self.input.counters, self.output.counters
        return AudioHealth(
            input=self._device_health(self.input, ins.get("blocks", 0) + (cap.blocks if cap else 0)),
            output=self._device_health(self.output, outs.get("blocks", 0) + (play.blocks if play else 0)),
            input_overflows=ins.get("overflows", 0) + (cap.overflows if cap else 0),
            input_dropped_blocks=ins.get("dropped", 0) + (cap.dropped_blocks if cap else 0),
            output_underruns=outs.get("underruns", 0) + (play.underruns if play else 0),
            output_underflows=outs.get("underflows", 0) + (play.underflows if play else 0),
            reverse_dropped_blocks=outs.get("reverse_dropped", 0) + (play.reverse_dropped if play else 0),
            processing_errors=self.processor.errors,
            stream_delay_ms=self.processor.delay_ms,
            speaking=self.vad.speaking,
            noise_floor_dbfs=self.vad.noise_floor_dbfs,
            mixer_underruns={name: src.underruns for name, src in self.mixer.inputs.items()},
            muted=self.muted,
            output_volume=self.mixer.volume,
            echo_cancellation=self.processor.echo_cancellation,
        )

    @staticmethod
    def _device_health(direction: Direction, blocks: int) -> DeviceHealth:
        return DeviceHealth(
            direction=direction.name,
            device=direction.device,
            ok=direction.stream is not None,
            samplerate=direction.samplerate,
            channels=direction.channels,
            latency_s=direction.latency_s,
            blocks=blocks,
            failures=direction.failures,
            reopens=direction.reopens,
            last_error=direction.last_error,
        )
