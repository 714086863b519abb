"""``kiosk doctor``'s platform facts: 64-bit userland, the C library livekit's wheel needs, the pin factory, the
sound cards; each wrong one names its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.commands.platform_facts import libc, pin_factory, sound_cards, userland

CARDS = """\
 0 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0
                      vc4-hdmi-0
 1 [seeed2micvoicec]: seeed-2mic-voic - seeed-2mic-voicecard
                      seeed-2mic-voicecard
"""


def test_a_64_bit_userland_on_arm64_is_fine_and_a_32_bit_one_is_named_with_its_fix() -> None:
    """aarch64 with a 64-bit Python passes; the same kernel under a 32-bit userland fails and says what to install."""
    assert userland(machine="aarch64", bits="64bit").ok is True
    wrong = userland(machine="aarch64", bits="32bit")
    assert wrong.ok is False and wrong.fix is not None and "Raspberry Pi OS (64-bit)" in wrong.fix
    assert userland(machine="armv7l", bits="32bit").ok is False


def test_the_c_library_is_held_against_the_wheels_manylinux_tag() -> None:
    """PEP 600: manylinux_2_28 needs glibc 2.28; bookworm's 2.36 passes, bullseye's 2.31 does not."""
    tags = ["py3-none-manylinux_2_28_aarch64"]
    assert libc(libc_ver=("glibc", "2.36"), wheel_tags=tags, machine="aarch64").ok is True
    old = libc(libc_ver=("glibc", "2.27"), wheel_tags=tags, machine="aarch64")
    assert old.ok is False and "glibc 2.28" in old.detail and old.fix is not None and "bookworm" in old.fix
    legacy = libc(libc_ver=("glibc", "2.17"), wheel_tags=["py3-none-manylinux2014_aarch64"], machine="aarch64")
    assert legacy.ok is True


def test_the_installed_livekit_wheel_is_read() -> None:
    """Without arguments the fact reads this machine's C library and the installed livekit wheel's tags."""
    fact = libc()
    assert fact.ok is True, fact
    assert "the livekit wheel needs glibc 2." in fact.detail


def test_sound_cards_and_the_hat_are_listed(tmp_path: Path) -> None:
    """Each card as index, id and name; the HAT's product and vendor from the device tree (NUL-terminated)."""
    cards = tmp_path / "cards"
    cards.write_text(CARDS)
    hat = tmp_path / "hat"
    hat.mkdir()
    (hat / "product").write_bytes(b"ReSpeaker 2-Mic Voice Card\0")
    (hat / "vendor").write_bytes(b"Seeed\0")
    fact = sound_cards(cards=cards, hat=hat)
    assert fact.ok is True
    assert fact.detail == (
        "0 vc4hdmi0 (vc4-hdmi-0); 1 seeed2micvoicec (seeed-2mic-voicecard); HAT: ReSpeaker 2-Mic Voice Card by Seeed"
    )


def test_no_sound_card_is_a_warning_with_the_fix(tmp_path: Path) -> None:
    """No /proc/asound/cards (or an empty one): only a sound server could serve the kiosk; the fix names USB and the
    HAT overlay."""
    fact = sound_cards(cards=tmp_path / "missing", hat=tmp_path / "no-hat")
    assert fact.ok is None and fact.fix is not None
    assert "dtoverlay" in fact.fix and "kiosk devices" in fact.fix


def test_the_mock_pin_factory_is_named_as_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpiozero's own choice, through gpiozero: GPIOZERO_PIN_FACTORY=mock is named, with the fix to unset it."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    fact = pin_factory()
    assert fact.ok is None
    assert fact.detail.startswith("mock (GPIOZERO_PIN_FACTORY=mock)")
    assert fact.fix == "unset GPIOZERO_PIN_FACTORY for real pins"
    from gpiozero import Device

    assert Device.pin_factory is None, "the doctor must not leave its pin factory behind"


def test_doctor_platform_prints_every_fact_as_json() -> None:
    """``kiosk doctor --platform --json``: a real process, no config needed, one object per fact, then the result."""
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "doctor", "--platform", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("step") for line in lines[:4]] == ["userland", "libc", "gpio", "sound cards"], result.stdout
    wrong = [line for line in lines[:4] if line["result"] == "FAIL"]
    assert all(line.get("fix") for line in wrong)
    assert lines[-1]["result"] == ("failed" if wrong else "passed")
    assert result.returncode == (1 if wrong else 0), result.stderr


def test_platform_refuses_broker_flags() -> None:
    """--platform checks the machine only: combined with --broker it is refused by name."""
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "doctor", "--platform", "--broker"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--platform checks this machine only" in result.stderr
