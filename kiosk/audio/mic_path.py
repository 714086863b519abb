"""The microphone path on the loop: mute, echo canceller span and processing, pre-roll, session captures, VAD.

Each 10 ms frame the capture stream hands over (:meth:`MicPath.on_frame`) goes, in a session, through the WebRTC APM
(within the canceller's span, :mod:`kiosk.audio.span`) to the pre-roll, every session capture and the frame
subscribers; idle, raw into the pre-roll. webrtcvad then judges it in 30 ms frames (onset, offset, wake).

Lean: while the kiosk is short of CPU (:mod:`kiosk.cpuwatch`) and its speaker has been silent for the echo tail,
a session's frames skip the APM (there is no echo to cancel; the APM is most of a session's CPU on the loop), the
canceller's span closes, the speaker stops feeding its reverse stream and the microphone hands its blocks over 90 ms
at a time, as when idle (the uplink and the VAD's end of speech lag by up to 60 ms more). The span opens again, its
two counts made equal, as soon as the kiosk's own output is audible (a chime, the agent's first words) or the
shortage passes, and no sooner than :data:`LEAN_SETTLE_S` after it closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from kiosk.audio import aec
from kiosk.audio.firstwords import FirstWordsEncoder
from kiosk.audio.frames import MicFrame, Pcm
from kiosk.audio.preroll import PreRoll, SessionCapture
from kiosk.audio.processing import Processor
from kiosk.audio.span import CancellerSpan
from kiosk.audio.vad import VadEvent, VoiceActivity
from kiosk.config import AudioConfig, TriggerConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Processed frames between two reads of the latencies measured in the callbacks (0.5 s).
DELAY_EVERY_FRAMES = 50
#: The VAD judges 30 ms frames (at 16 kHz): a third of the calls of 10 ms frames.
VAD_FRAME_MS = 30
#: A span closed for lean reopens no sooner than this (s): the hand-offs on their way at the close (30-90 ms).
LEAN_SETTLE_S = 0.1
#: Wake stays gated this long after the kiosk's own output was last audible (room echo tail).
WAKE_GATE_TAIL_S = 0.5


def subscribe(subscribers: list[T], callback: T) -> Callable[[], None]:
    """Add ``callback`` to ``subscribers``; return the function that removes it."""
    subscribers.append(callback)
    return lambda: subscribers.remove(callback) if callback in subscribers else None


def emit(subscribers: list[Callable[[T], None]], item: T) -> None:
    """Hand ``item`` to every subscriber; one that raises is logged and the others still get it."""
    for callback in list(subscribers):
        try:
            callback(item)
        except Exception:
            log.exception("an audio subscriber failed on %r", type(item).__name__)


class MicPath:
    """What happens to each microphone frame, and who receives it."""

    def __init__(
        self,
        *,
        audio: AudioConfig,
        trigger: TriggerConfig,
        clock: Callable[[], float],
        wake_speaker: Callable[[], None],
        measured_latencies: Callable[[], tuple[float | None, float | None]],
        processor: Processor | None = None,
    ) -> None:
        """``wake_speaker()`` starts the speaker's callback feeding the reverse stream (a session is starting);
        ``measured_latencies()`` gives the capture and playback latencies the callbacks measured (s), or None."""
        self.config = audio
        self._clock = clock
        self._wake_speaker = wake_speaker
        self._measured_latencies = measured_latencies
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
        self._preroll = PreRoll(audio.pre_roll_ms)
        self.sessions: list[SessionCapture] = []
        self._frame_subscribers: list[Callable[[MicFrame], None]] = []
        self._raw_subscribers: list[Callable[[MicFrame], None]] = []
        self._vad_subscribers: list[Callable[[VadEvent], None]] = []
        #: ``short_of_cpu(within_s)``: whether the kiosk is short of CPU (the engine sets
        #: :meth:`kiosk.cpuwatch.CpuWatch.short`).
        self.short_of_cpu: Callable[[float], bool] = lambda within_s: False
        #: Until when (engine clock, s) the kiosk's own output may still echo into the microphone.
        self._audible_until = float("-inf")
        self._lean = False
        #: Session frames that skipped the APM while lean.
        self.lean_frames = 0

    def set_echo(self, choice: aec.EchoChoice) -> None:
        """Take the echo decision for the devices now open; a changed decision rebuilds the processor."""
        if choice == self.echo:
            return
        self.echo = choice
        log.info("software echo cancellation %s", choice.describe())
        if choice.enabled != self.processor.echo_cancellation:
            self.processor = Processor(self.config, echo_cancellation=choice.enabled)

    def processing(self) -> bool:
        """Whether a session captures audio or a frame subscriber listens."""
        return bool(self.sessions or self._frame_subscribers)

    def lean(self) -> bool:
        """Whether a session's frames skip the APM to save CPU: the kiosk is short of CPU and its speaker has been
        silent for the echo tail (nothing to cancel)."""
        return self.short_of_cpu(0.0) and self._clock() >= self._audible_until

    def cancelling(self) -> bool:
        """Whether mic frames go through the APM and the speaker feeds its reverse stream: while processing, unless
        lean."""
        return self.processing() and not self.lean()

    def feeds(self, t: float) -> bool:
        """Whether the echo canceller gets the frame captured or played at ``t`` (the engine's clock, s); see
        :mod:`kiosk.audio.span`."""
        return self._span.holds(t)

    def _mark_span(self) -> None:
        """Open or close the echo canceller's span now, when processing just started or stopped; on opening, make
        the last span's two frame counts equal with silent frames (a few FFI calls at a press)."""
        lag = self._span.follow(self.cancelling(), self._clock())
        if lag is not None:
            self.processor.new_span(lag)

    def _end_session(self, session: SessionCapture) -> None:
        self.sessions.remove(session)
        self._mark_span()

    def _cancel(self, pcm: Pcm) -> Pcm:
        """One microphone frame of the span through the APM, counted for the span's balance."""
        self._span.mic_frames += 1
        return self.processor.process(pcm)

    def reverse(self, pcm: Pcm) -> None:
        """One block the speaker played, to the canceller's reverse stream (counted for the span's balance)."""
        self._span.speaker_frames += 1
        self.processor.reverse(pcm)

    def on_frame(self, pcm: Pcm, t: float) -> None:
        """One 10 ms microphone frame (48 kHz) captured at ``t`` (s), on the loop."""
        if self._raw_subscribers:
            # what the device delivered (the deafness watch judges the microphone, muted or not)
            emit(self._raw_subscribers, MicFrame(t=t, pcm=pcm))
        if self.muted:
            pcm = np.zeros_like(pcm)
        if self.processing() and (lean := self.lean()) != self._lean and (lean or self._settled()):
            self._lean = lean
            log.debug("%s the APM: short of CPU, the speaker silent", "skipping" if lean else "back to")
            if not lean:
                self._wake_speaker()  # before the span opens: no block it plays inside the span goes unrecorded
            self._mark_span()
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
        elif self._lean:
            self.lean_frames += 1
        # else: captured before the span began (it reached the loop late): it goes to the session raw, like the
        # pre-roll it follows.
        frame = MicFrame(t=t, pcm=pcm)
        self._preroll.push(frame)
        for session in self.sessions:
            session.feed(frame)
        emit(self._frame_subscribers, frame)
        self._judge(frame.pcm, t)

    def _follow_delay(self) -> None:
        """Set the echo path delay from the latencies the callbacks measured, where the host API reports them."""
        measured_in, measured_out = self._measured_latencies()
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
            emit(self._vad_subscribers, event)

    def on_audible(self) -> None:
        """The kiosk's own output is audible: no voice wake until its echo has died away, and no lean APM."""
        self._audible_until = self._clock() + WAKE_GATE_TAIL_S + self.processor.delay_ms / 1000
        self.vad.gate_wake(self._audible_until)
        if self._lean and self._settled():
            self._lean = False
            self._wake_speaker()
            self._mark_span()
        # else (a span closed moments ago): the next microphone frame reopens it once it has settled.

    def _settled(self) -> bool:
        """Whether a span closed for lean may reopen: :data:`LEAN_SETTLE_S` after it closed, every frame played or
        captured before the close has reached the loop and been counted, so the make-up evens the counts exactly."""
        closed = self._span.closed
        return closed is None or self._clock() - closed >= LEAN_SETTLE_S

    def gate_wake_for(self, seconds: float) -> None:
        """No voice wake for ``seconds`` (s) plus the echo tail (a chime is playing)."""
        self.vad.gate_wake(self._clock() + seconds + WAKE_GATE_TAIL_S)

    # -- subscribers and captures -----------------------------------------------------------------------

    def subscribe_frames(self, callback: Callable[[MicFrame], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop with every processed mic frame; returns the unsubscribe function."""
        unsubscribe = subscribe(self._frame_subscribers, callback)
        self._wake_speaker()
        self._mark_span()

        def done() -> None:
            unsubscribe()
            self._mark_span()

        return done

    def subscribe_raw_frames(self, callback: Callable[[MicFrame], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop with every raw (unprocessed) mic frame; returns the unsubscribe function."""
        return subscribe(self._raw_subscribers, callback)

    def subscribe_vad(self, callback: Callable[[VadEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with every onset, offset and wake event; returns the unsubscribe function."""
        return subscribe(self._vad_subscribers, callback)

    def start_capture(self, since: float | None = None) -> SessionCapture:
        """Keep all mic audio from ``since`` (a press time, or a wake event's ``speech_start``) for a session."""
        start = self._clock() if since is None else since
        session = SessionCapture(
            start=start,
            backlog=self._preroll.since(start),
            max_s=self.config.max_preconnect_s,
            on_close=self._end_session,
            encoder=FirstWordsEncoder(),
        )
        self.sessions.append(session)
        # The reverse stream starts now, a connect's length before the agent's first words; the speaker is woken
        # before the span opens, so no block it plays inside the span goes unrecorded.
        self._wake_speaker()
        self._mark_span()
        return session
