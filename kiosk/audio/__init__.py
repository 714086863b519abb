"""The kiosk's audio: microphone and speaker through PortAudio, echo cancellation, voice activity, pre-roll.

Everything runs on the daemon's asyncio loop except the two PortAudio callbacks, which only copy blocks and
hand them over with ``call_soon_threadsafe`` (three 10 ms blocks at a time in a session, nine while idle). Devices
open at 48 kHz when PortAudio says they take it, else at their default rate with a resampler. The mic path is::

    input device -> chosen channel -> 48 kHz (rtc.AudioResampler, only if the device needed it) -> 10 ms frames
      -> in a session: rtc.AudioProcessingModule (AEC/NS/HPF/AGC) -> pre-roll, session captures, frame subscribers
         idle: raw into the pre-roll
      -> webrtcvad segments on 16 kHz 30 ms frames (onset / offset / wake events; idle only for voice wake)

and the speaker path: named mixer inputs -> mix x volume -> output device; in a session each block the device
actually played goes back to the APM as the reverse stream. While nothing plays and no session runs, the speaker's
callback plays silence on its own and the loop is not involved.

The daemon wires one :class:`AudioEngine`::

    engine = AudioEngine(audio=config.audio, trigger=config.trigger)   # stream_factory=SoundDeviceFactory()
    await engine.start()                        # AudioDeviceError (listing devices) on a wrong device
    engine.subscribe_vad(on_vad)                # VadEvent(kind=ONSET|OFFSET|WAKE, t, speech_start, level_dbfs)
    engine.subscribe_health(on_health)          # AudioHealthEvent(direction, ok, message, reason)
    engine.subscribe_frames(on_frame)           # every processed MicFrame (t, pcm)
    engine.last_speech_t                        # for the silence timeout
    capture = engine.start_capture(since=press_t or wake_event.speech_start)
    pre = capture.take_preconnect()             # PreConnectAudio(pcm bytes, duration_s), once the room is live
    async for frame in capture: await source.capture_frame(to_rtc(frame.pcm))
    capture.close()
    engine.mixer_input(AGENT).push(frame)       # rtc.AudioFrame (48 kHz) or numpy; also BACKGROUND
    engine.play_chime(Chime.CONNECTED)          # CONNECTED / ENDED / ERROR; no-op when audio.chimes is off
    engine.health()                             # AudioHealth snapshot with counters
    await engine.close()

A device that errors or stalls (no callback for ``audio.stall_timeout_s``) is reported with
``FailureReason.AUDIO_DEVICE``, closed, and reopened with jittered exponential backoff up to
``audio.reopen_backoff_max_s``; the engine carries on meanwhile. Wake events are suppressed while the kiosk's
own output (chimes, the agent) is audible and for a short tail after it.

Hardware is reached only through :class:`~kiosk.audio.streams.StreamFactory`;
:class:`~kiosk.audio.fake.FakeStreamFactory` is the test double.
"""

from __future__ import annotations

from kiosk.audio.chimes import Chime
from kiosk.audio.engine import AGENT, BACKGROUND, CHIMES, AudioEngine
from kiosk.audio.frames import FRAME_SAMPLES, SAMPLE_RATE, MicFrame
from kiosk.audio.health import AudioHealth, AudioHealthEvent, DeviceHealth
from kiosk.audio.mixer import MixerInput
from kiosk.audio.preroll import PreConnectAudio, SessionCapture
from kiosk.audio.streams import DeviceInfo, SoundDeviceFactory, StreamFactory
from kiosk.audio.vad import VadEvent, VadEventKind

__all__ = [
    "AGENT",
    "BACKGROUND",
    "CHIMES",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioEngine",
    "AudioHealth",
    "AudioHealthEvent",
    "Chime",
    "DeviceHealth",
    "DeviceInfo",
    "MicFrame",
    "MixerInput",
    "PreConnectAudio",
    "SessionCapture",
    "SoundDeviceFactory",
    "StreamFactory",
    "VadEvent",
    "VadEventKind",
]
