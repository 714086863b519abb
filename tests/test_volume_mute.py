"""Volume and mute: the kept state, the steps and tones, and the mute gate in the real audio engine on ALSA files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiosk.audio import CHIMES, AudioEngine, MicFrame, VadEvent, VadEventKind
from kiosk.config import AudioConfig, KioskConfig, TriggerConfig
from kiosk.daemon.volume_mute import STATE_FILE, VOLUME_MIN, DeviceControls, load_state
from tests.fixtures.audio import AlsaFiles, SpeechClip, to_raw
from tests.fixtures.waiting import until

BUTTONS = {"volume_up_pin": 22, "volume_down_pin": 23, "mute_pin": 24}


def kiosk_config(tmp_path: Path, trigger: dict[str, int] | None = None, **audio: Any) -> KioskConfig:
    """A config with the volume and mute buttons (or ``trigger``) whose state directory is in ``tmp_path``."""
    return KioskConfig.model_validate(
        {
            "broker": {"dialect": "livekit", "url": "http://127.0.0.1:9"},
            "audio": {"chimes": False, **audio},
            "trigger": BUTTONS if trigger is None else trigger,
            "daemon": {"state_dir": str(tmp_path / "state")},
        }
    )


class Seen:
    """What the controls told the events stream and the LEDs."""

    def __init__(self) -> None:
        self.changes: list[dict[str, Any]] = []
        self.mutes: list[bool] = []


def controls(config: KioskConfig, engine: AudioEngine, seen: Seen) -> DeviceControls:
    """Controls over ``engine`` reporting into ``seen``."""
    return DeviceControls(config=config, audio=engine, on_change=seen.changes.append, on_mute=seen.mutes.append)


async def test_steps_clamp_play_a_tone_and_are_kept(tmp_path: Path) -> None:
    """Steps of 0.1 stop at 1.0 and at the minimum; each plays the tone (chimes off or not); a restart keeps them."""
    config = kiosk_config(tmp_path, output_volume=0.8)
    engine = AudioEngine(audio=config.audio)
    seen = Seen()
    ctl = controls(config, engine, seen)
    assert (ctl.volume, ctl.muted, seen.mutes) == (0.8, False, [False])
    for _ in range(4):
        ctl.step_volume(+1)
    assert ctl.volume == 1.0 and engine.mixer.volume == 1.0
    assert engine.mixer.inputs[CHIMES].queued_samples > 0, "the tone plays although audio.chimes is off"
    for _ in range(15):
        ctl.step_volume(-1)
    assert ctl.volume == VOLUME_MIN
    ctl.toggle_mute()
    assert engine.muted and seen.mutes[-1] is True
    assert seen.changes[-1] == {"volume": VOLUME_MIN, "muted": True}
    await ctl.aclose()
    assert json.loads((tmp_path / "state" / STATE_FILE).read_text()) == {"volume": VOLUME_MIN, "muted": True}

    again = AudioEngine(audio=config.audio)
    restored = controls(config, again, Seen())
    assert (restored.volume, restored.muted, again.mixer.volume, again.muted) == (VOLUME_MIN, True, VOLUME_MIN, True)


async def test_kept_state_needs_its_button(tmp_path: Path) -> None:
    """Without a mute button a kept mute is not applied (nothing could lift it); without volume buttons the config's
    volume is used."""
    config = kiosk_config(tmp_path, output_volume=0.8)
    ctl = controls(config, AudioEngine(audio=config.audio), Seen())
    ctl.step_volume(-1)
    ctl.set_muted(True)
    await ctl.aclose()
    bare = kiosk_config(tmp_path, trigger={}, output_volume=0.6)
    engine = AudioEngine(audio=bare.audio)
    seen = Seen()
    restored = controls(bare, engine, seen)
    assert (restored.volume, restored.muted, seen.mutes) == (0.6, False, [False])


def test_a_damaged_state_file_is_named_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Unreadable JSON logs the file and what is used instead; values out of range are dropped."""
    (tmp_path / STATE_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert load_state(tmp_path) == {}
    assert STATE_FILE in caplog.text and "audio.output_volume" in caplog.text
    (tmp_path / STATE_FILE).write_text(json.dumps({"volume": 7, "muted": "yes"}))
    assert load_state(tmp_path) == {}
    (tmp_path / STATE_FILE).write_text(json.dumps({"volume": 0.3, "muted": False}))
    assert load_state(tmp_path) == {"volume": 0.3, "muted": False}


async def test_muted_microphone_gives_silence_and_no_wake(alsa_files: AlsaFiles, speech: SpeechClip) -> None:
    """On ALSA file devices: speech while muted reaches frame subscribers as zeros and never wakes; unmuted it does.

    Sessions and the pre-roll take the same frames as the subscribers (the daemon test checks a muted session).
    """
    voice = speech.pcm(48_000)
    results: dict[bool, tuple[int, list[VadEventKind]]] = {}
    for muted in (True, False):
        to_raw(np.concatenate([np.zeros(48_000, np.int16), voice]), alsa_files.mic48_in, pad_s=2.0)
        config = AudioConfig(input_device=alsa_files.mic48, output_device=alsa_files.spk)
        engine = AudioEngine(audio=config, trigger=TriggerConfig(voice_wake=True), max_pending_s=30)
        engine.muted = muted
        frames: list[MicFrame] = []
        events: list[VadEvent] = []
        engine.subscribe_frames(frames.append)
        engine.subscribe_vad(events.append)
        total = (48_000 + len(voice)) // 480 + 150
        await engine.start()
        try:
            await until(lambda frames=frames, total=total: len(frames) >= total, 30, "every frame", step=0.005)
        finally:
            await engine.close()
        loudest = max(int(np.abs(frame.pcm).max()) for frame in frames)
        results[muted] = (loudest, [event.kind for event in events])
    assert results[True] == (0, [])
    assert results[False][0] > 1000 and VadEventKind.WAKE in results[False][1]


def test_extra_buttons_join_the_pin_conflict_check() -> None:
    """A mute button on the main button's pin, or a volume button on an LED's pin, is refused naming both keys."""
    broker = {"dialect": "livekit", "url": "http://127.0.0.1:9"}
    with pytest.raises(ValueError, match=r"GPIO17 is used by trigger\.button_pin and trigger\.mute_pin"):
        KioskConfig.model_validate({"broker": broker, "trigger": {"button_pin": 17, "mute_pin": 17}})
    with pytest.raises(ValueError, match=r"GPIO18 is used by trigger\.volume_up_pin and leds\.pin"):
        KioskConfig.model_validate(
            {"broker": broker, "trigger": {"volume_up_pin": 18}, "leds": {"kind": "single", "pin": 18}}
        )
    ok = KioskConfig.model_validate(
        {"broker": broker, "trigger": {"button_pin": 17, "volume_up_pin": 22, "volume_down_pin": 23, "mute_pin": 24}}
    )
    assert ok.pins() == {
        "trigger.button_pin": 17,
        "trigger.volume_up_pin": 22,
        "trigger.volume_down_pin": 23,
        "trigger.mute_pin": 24,
    }


def test_status_and_events_in_words() -> None:
    """``kiosk status`` names the volume, the mute and the echo choice; ``kiosk events`` a controls change."""
    from kiosk.commands.control import format_event
    from kiosk.commands.statusview import format_status

    status = {
        "state": "idle",
        "volume": 0.7,
        "muted": True,
        "audio": {"echo_cancellation": {"enabled": False, "why": "auto: 'Jabra' is a speakerphone"}},
    }
    text = format_status(status, now=0.0)
    assert "controls:    volume 70 %, microphone MUTED" in text
    assert "echo cancel: off (auto: 'Jabra' is a speakerphone)" in text
    assert format_event({"type": "controls", "volume": 0.5, "muted": False}) == "controls  volume 50 %, mic on"
