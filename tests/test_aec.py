"""``audio.echo_cancellation``: the "auto" choice by name, and through PortAudio on a speakerphone-named ALSA device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiosk.audio import AudioEngine, aec
from kiosk.commands.devices import main as devices_main
from kiosk.config import AudioConfig
from tests.fixtures.audio import AlsaFiles

PHONE = "Jabra_SPEAK_510_USB"


@pytest.mark.parametrize(
    ("setting", "mic", "speaker", "enabled", "why"),
    [
        ("auto", "Jabra SPEAK 510 USB: Audio (hw:1,0)", "Jabra SPEAK 510 USB: Audio (hw:1,0)", False, "jabra speak"),
        ("auto", "Anker PowerConf S330: USB Audio (hw:2,0)", "Anker PowerConf S330: USB Audio (hw:2,0)", False, ""),
        ("auto", "eMeet M0 Plus: USB Audio (hw:3,0)", "eMeet M0 Plus: USB Audio (hw:3,0)", False, "emeet"),
        ("auto", "USB Speakerphone: Audio (hw:1,0)", "USB Speakerphone: Audio (hw:1,0)", False, "speakerphone"),
        ("auto", "Jabra SPEAK 510 USB: Audio (hw:1,0)", "bcm2835 Headphones: - (hw:0,0)", True, "different"),
        ("auto", "USB PnP Sound Device: Audio (hw:1,0)", "USB PnP Sound Device: Audio (hw:1,0)", True, "not a known"),
        ("auto", "seeed-2mic-voicecard: (hw:1,0)", "seeed-2mic-voicecard: (hw:1,0)", True, "not a known"),
        ("auto", None, None, True, "until both"),
        (True, "Jabra SPEAK 510 USB: Audio (hw:1,0)", "Jabra SPEAK 510 USB: Audio (hw:1,0)", True, "= true"),
        (False, "USB PnP Sound Device (hw:1,0)", "bcm2835 Headphones (hw:0,0)", False, "= false"),
    ],
)
def test_choice_by_device_names(
    setting: bool | str, mic: str | None, speaker: str | None, enabled: bool, why: str
) -> None:
    """Off only for one self-cancelling device (by card number or name); true/false force; the reason says why."""
    choice = aec.choose(setting, mic, speaker)  # type: ignore[arg-type]
    assert choice.enabled is enabled
    assert why in choice.reason
    assert choice.describe().startswith("on: " if enabled else "off: ")


def test_same_device_compares_cards_not_sub_devices() -> None:
    """Two PCMs of one card are one device; the same product on two cards is two."""
    assert aec.same_device("Jabra SPEAK 510 USB: Audio (hw:1,0)", "Jabra SPEAK 510 USB: Audio (hw:1,1)")
    assert not aec.same_device("Jabra SPEAK 510 USB: Audio (hw:1,0)", "Jabra SPEAK 510 USB: Audio (hw:2,0)")
    assert aec.speakerphone_match("Poly Sync 20: USB Audio (hw:1,0)") == "poly sync"
    assert aec.speakerphone_match("USB PnP Sound Device: Audio (hw:1,0)") is None


async def _engine_choice(audio: AudioConfig) -> tuple[aec.EchoChoice, bool]:
    engine = AudioEngine(audio=audio)
    await engine.start()
    try:
        return engine.echo, engine.processor.echo_cancellation
    finally:
        await engine.close()


async def test_engine_turns_its_canceller_off_on_a_speakerphone(alsa_files: AlsaFiles) -> None:
    """Opened through PortAudio, one speakerphone for both directions runs without the software canceller."""
    choice, running = await _engine_choice(AudioConfig(input_device=PHONE, output_device=PHONE))
    assert (choice.enabled, running) == (False, False)
    assert PHONE in choice.reason and "speakerphone" in choice.reason


async def test_engine_keeps_its_canceller_with_a_separate_speaker(alsa_files: AlsaFiles) -> None:
    """The speakerphone's mic with another speaker, or a forced setting, keeps the software canceller on."""
    choice, running = await _engine_choice(AudioConfig(input_device=PHONE, output_device=alsa_files.spk))
    assert (choice.enabled, running) == (True, True)
    assert "different devices" in choice.reason
    forced, running = await _engine_choice(AudioConfig(input_device=PHONE, output_device=PHONE, echo_cancellation=True))
    assert (forced.enabled, running) == (True, True)


def test_devices_command_says_what_auto_chooses(
    tmp_path: Path, alsa_files: AlsaFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    """``kiosk devices`` marks the speakerphone and, for a config using it, says the canceller is off and why."""
    config = tmp_path / "kiosk.toml"
    config.write_text(
        '[broker]\ndialect = "livekit"\nurl = "https://broker.example"\n\n'
        f'[audio]\ninput_device = "{PHONE}"\noutput_device = "{PHONE}"\n'
    )
    assert devices_main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if PHONE in line and "[" in line)
    assert "[speakerphone: cancels its own echo]" in row
    assert 'software echo cancellation (audio.echo_cancellation = "auto"): off: auto:' in out
    config.write_text(config.read_text().replace(f'output_device = "{PHONE}"', f'output_device = "{alsa_files.spk}"'))
    assert devices_main(["--config", str(config), "--json"]) == 0
    echo = json.loads(capsys.readouterr().out)["echo_cancellation"]
    assert echo["enabled"] is True and echo["output"] == alsa_files.spk


def test_devices_command_judges_the_config_kiosk_config_names(
    tmp_path: Path, alsa_files: AlsaFiles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--config`` the file ``$KIOSK_CONFIG`` names is judged; a broken one still lists the devices, judged
    on the defaults, with the config error on stderr."""
    config = tmp_path / "kiosk.toml"
    config.write_text(
        '[broker]\ndialect = "livekit"\nurl = "https://broker.example"\n\n'
        f'[audio]\ninput_device = "{PHONE}"\noutput_device = "{PHONE}"\n'
    )
    monkeypatch.setenv("KIOSK_CONFIG", str(config))
    assert devices_main([]) == 0
    assert 'software echo cancellation (audio.echo_cancellation = "auto"): off: auto:' in capsys.readouterr().out
    config.write_text(config.read_text() + "volume = 3\n")
    assert devices_main([]) == 0
    captured = capsys.readouterr()
    assert PHONE in captured.out
    assert "judging the default [audio] settings: config error:" in captured.err and "audio.volume" in captured.err


def test_setting_accepts_true_false_and_auto_only() -> None:
    """Booleans and "auto" (any case) are accepted; anything else is refused with the three choices named."""
    assert AudioConfig(echo_cancellation="AUTO").echo_cancellation == "auto"  # type: ignore[arg-type]
    assert AudioConfig(echo_cancellation=False).echo_cancellation is False
    assert AudioConfig().echo_cancellation == "auto"
    with pytest.raises(ValueError, match='must be true, false or "auto"'):
        AudioConfig(echo_cancellation="yes")  # type: ignore[arg-type]
