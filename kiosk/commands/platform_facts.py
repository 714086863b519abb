"""What decides whether the kiosk can run on this machine, for ``kiosk doctor``.

Four facts, each with the fix when it is wrong: a 64-bit userland (the livekit SDK ships no 32-bit ARM wheel), a C
library at least as new as the installed livekit wheel's ``manylinux_X_Y`` tag asks for (PEP 600: glibc X.Y), the
GPIO pin factory gpiozero will use and why (its own choice, in its own order: lgpio, rpigpio, pigpio, native, or
``GPIOZERO_PIN_FACTORY``), and the ALSA sound cards (``/proc/asound/cards``) with the HAT the firmware found
(``/proc/device-tree/hat``, from the HAT's ID EEPROM).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

#: Userland machines the kiosk's native dependencies ship wheels for.
SUPPORTED_MACHINES = frozenset({"aarch64", "x86_64"})
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
#: PEP 600's legacy aliases of manylinux tags.
_LEGACY = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
_CARD = re.compile(r"^\s*(\d+)\s+\[(\S+)\s*\]:\s*(\S+)\s+-\s+(.*)$")
#: gpiozero's names of its pin factory classes.
_FACTORY_NAMES = {
    "LGPIOFactory": "lgpio",
    "RPiGPIOFactory": "rpigpio",
    "PiGPIOFactory": "pigpio",
    "NativeFactory": "native",
    "MockFactory": "mock",
}


@dataclasses.dataclass(frozen=True)
class Fact:
    """One platform fact: ``ok`` True (fine), False (the kiosk cannot run: fix it), None (it may run, with less or
    through something else: check the fix)."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None


def userland(*, machine: str | None = None, bits: str | None = None) -> Fact:
    """A 64-bit userland on a machine the wheels exist for (``platform.machine()``, ``platform.architecture()``)."""
    machine = machine or platform.machine()
    bits = bits or platform.architecture()[0]
    detail = f"{machine}, {bits} userland, Python {platform.python_version()}"
    if bits == "64bit" and machine in SUPPORTED_MACHINES:
        return Fact("userland", True, detail)
    return Fact(
        "userland",
        False,
        detail,
        "install Raspberry Pi OS (64-bit): the livekit SDK ships no wheel for 32-bit ARM (a 64-bit kernel under a "
        "32-bit userland does not count)",
    )


def libc(
    *, libc_ver: tuple[str, str] | None = None, wheel_tags: list[str] | None = None, machine: str | None = None
) -> Fact:
    """The C library against the installed livekit wheel's manylinux tag (``platform.libc_ver()``; the wheel's
    ``WHEEL`` file)."""
    name, version = libc_ver or platform.libc_ver()
    if wheel_tags is None:
        try:
            wheel = metadata.distribution("livekit").read_text("WHEEL") or ""
        except metadata.PackageNotFoundError:
            return Fact(
                "libc", False, f"{name or 'unknown'} {version}; livekit is not installed", "run scripts/setup.sh"
            )
        wheel_tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    needed = _needed_glibc(wheel_tags, machine or platform.machine())
    if needed is None:
        return Fact("libc", None, f"{name or 'unknown'} {version}; livekit's wheel names no manylinux tag {wheel_tags}")
    want = f"{needed[0]}.{needed[1]}"
    detail = f"{name or 'unknown'} {version or '?'}; the livekit wheel needs glibc {want} or newer"
    if name == "glibc" and _version(version) >= needed:
        return Fact("libc", True, detail)
    return Fact(
        "libc",
        False,
        detail,
        "upgrade to Raspberry Pi OS bookworm (glibc 2.36): bullseye's glibc 2.31 is too old for livekit's native "
        "library",
    )


def pin_factory(environ: Mapping[str, str] | None = None) -> Fact:
    """The pin factory gpiozero picks (``Device.ensure_pin_factory``), with the reasons it passed over the others."""
    from gpiozero import Device

    environ = os.environ if environ is None else environ
    chosen = environ.get("GPIOZERO_PIN_FACTORY")
    with warnings.catch_warnings(record=True) as passed_over:
        warnings.simplefilter("always")
        try:
            Device.ensure_pin_factory()
        except Exception as exc:  # noqa: BLE001 - gpiozero raises BadPinFactory or what a factory's import raised
            why = "; ".join(str(w.message).removeprefix("Falling back from ") for w in passed_over) or str(exc)
            return Fact(
                "gpio",
                None,
                f"no pin factory loads ({why}): the button, the LEDs and `kiosk test` pins do not work",
                "on a Raspberry Pi, lgpio ships with the kiosk's install (aarch64): check `kiosk` runs from its venv "
                "and /dev/gpiochip* is there; voice wake and the control socket work without pins",
            )
    factory = Device.pin_factory
    name = _FACTORY_NAMES.get(type(factory).__name__, type(factory).__name__)
    try:
        factory.close()
    finally:
        Device.pin_factory = None
    skipped = [
        str(w.message).removeprefix("Falling back from ") for w in passed_over if "Falling back" in str(w.message)
    ]
    if chosen:
        return Fact(
            "gpio",
            None if name == "mock" else True,
            f"{name} (GPIOZERO_PIN_FACTORY={chosen})"
            + (": simulated pins, nothing real is driven" if name == "mock" else ""),
            "unset GPIOZERO_PIN_FACTORY for real pins" if name == "mock" else None,
        )
    if name == "lgpio":
        return Fact("gpio", True, "lgpio (gpiozero's first choice)")
    return Fact(
        "gpio",
        None,
        f"{name}, after: {'; '.join(skipped)}",
        "lgpio is the factory for a Pi 5 (and the best on every Pi): reinstall the kiosk's venv (scripts/install.sh)",
    )


def sound_cards(*, cards: Path = Path("/proc/asound/cards"), hat: Path = Path("/proc/device-tree/hat")) -> Fact:
    """The ALSA cards (index, id, name) and the HAT the firmware read from its EEPROM, if any."""
    hat_name = _hat(hat)
    hat_text = f"; HAT: {hat_name}" if hat_name else ""
    try:
        lines = cards.read_text().splitlines()
    except OSError:
        lines = []
    found = [match.groups() for line in lines if (match := _CARD.match(line))]
    if not found:
        # A warning, not a failure: a sound server's devices (PulseAudio, PipeWire) may still serve the kiosk.
        return Fact(
            "sound cards",
            None,
            f"none in {cards}{hat_text}: only a sound server's devices can serve the kiosk",
            "plug in a USB sound card or speakerphone, or enable the HAT's driver (its dtoverlay= line in "
            "/boot/firmware/config.txt) and reboot; `kiosk devices` lists what PortAudio sees",
        )
    listed = "; ".join(f"{index} {card_id} ({name.strip()})" for index, card_id, _, name in found)
    return Fact("sound cards", True, listed + hat_text)


def platform_facts() -> list[Fact]:
    """Every fact, in the order ``kiosk doctor`` prints them."""
    return [userland(), libc(), pin_factory(), sound_cards()]


def _needed_glibc(tags: list[str], machine: str) -> tuple[int, int] | None:
    """The oldest glibc (major, minor) any of the wheel's tags for ``machine`` accepts."""
    versions = []
    for tag in tags:
        platform_tag = tag.split("-")[-1]
        for part in platform_tag.split("."):
            if (match := _MANYLINUX.fullmatch(part)) is not None and match.group(3) == machine:
                versions.append((int(match.group(1)), int(match.group(2))))
            for legacy, version in _LEGACY.items():
                if part == f"{legacy}_{machine}":
                    versions.append(version)
    return min(versions) if versions else None


def _version(text: str) -> tuple[int, int]:
    major, minor = [*(int(p) for p in re.findall(r"\d+", text)[:2]), 0, 0][:2]
    return major, minor


def _hat(folder: Path) -> str | None:
    """The HAT's product and vendor from the device tree (NUL-terminated strings), or None without a HAT."""
    try:
        product = (folder / "product").read_bytes().rstrip(b"\0").decode(errors="replace")
    except OSError:
        return None
    try:
        vendor = (folder / "vendor").read_bytes().rstrip(b"\0").decode(errors="replace")
    except OSError:
        vendor = ""
    return f"{product} by {vendor}" if vendor else product
