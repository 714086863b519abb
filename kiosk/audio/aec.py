"""Whether the kiosk runs its own echo canceller: ``audio.echo_cancellation`` = true, false or "auto".

A USB speakerphone (Jabra Speak, Anker PowerConf, eMeet, Poly Sync, ...) cancels its own echo in hardware, with the
microphone and speaker in one housing at a known distance: it does that better than any software canceller on a
cheap speaker, and a second canceller on top only adds delay and damages the visitor's speech. So "auto" turns the
software canceller off when input and output are one device that says it cancels echo itself (its name, which for a
USB device is its product string, says "speakerphone" or "echo cancel"), or that is on :data:`SPEAKERPHONES`; it
stays on for everything else (a HAT, a USB mic with a separate speaker, two different USB devices).
"""

from __future__ import annotations

import dataclasses
import re

from kiosk.config import EchoCancellation

#: Name fragments of USB speakerphones that cancel their own echo, as their ALSA card or product names spell them
#: (compared after lower-casing, with every run of punctuation and spaces read as one space). The one list to extend.
SPEAKERPHONES: tuple[str, ...] = (
    "jabra speak",
    "anker powerconf",
    "emeet",
    "poly sync",
    "plantronics sync",
    "yealink cp",
    "logitech speakerphone",
    "beyerdynamic phonum",
    "tenveo",
    "nuroum",
)
#: Words by which a device names its own echo cancelling.
SELF_CANCELLING_WORDS: tuple[str, ...] = ("speakerphone", "echo cancel", "echo cancelling", "aec")

#: ``hw:CARD,DEV`` (or ``plughw:``) in a PortAudio ALSA device name: the card number names the physical device.
_CARD = re.compile(r"\((?:plug)?hw:(\d+)(?:,\d+)?\)")


@dataclasses.dataclass(frozen=True)
class EchoChoice:
    """The decision: whether software echo cancellation runs, and why (a sentence for ``kiosk status``)."""

    enabled: bool
    reason: str

    def describe(self) -> str:
        """``"on: ..."`` or ``"off: ..."``."""
        return f"{'on' if self.enabled else 'off'}: {self.reason}"


def normalise(name: str) -> str:
    """Lower case, the ``(hw:1,0)`` suffix dropped, every run of non-alphanumerics one space."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", _CARD.sub("", name).lower()).split())


def speakerphone_match(name: str) -> str | None:
    """The list entry or word that marks ``name`` as a self-cancelling speakerphone, or None."""
    plain = f" {normalise(name)} "
    for fragment in SELF_CANCELLING_WORDS + SPEAKERPHONES:
        if f" {fragment}" in plain:
            return fragment
    return None


def same_device(input_name: str, output_name: str) -> bool:
    """Whether two PortAudio device names are one physical device: the same ALSA card, else the same name."""
    cards = _CARD.search(input_name), _CARD.search(output_name)
    if cards[0] is not None and cards[1] is not None:
        return cards[0].group(1) == cards[1].group(1)
    # Without a card number (a named PCM, PulseAudio), compare names up to the sub-device after a colon.
    return normalise(input_name.split(":")[0]) == normalise(output_name.split(":")[0])


def choose(setting: EchoCancellation, input_name: str | None, output_name: str | None) -> EchoChoice:
    """Decide for ``audio.echo_cancellation`` = ``setting`` with these device names (None: not open yet).

    Source of the rule: issue 16 (speakerphones); the names in :data:`SPEAKERPHONES`.
    """
    if setting is True:
        return EchoChoice(True, "audio.echo_cancellation = true")
    if setting is False:
        return EchoChoice(False, "audio.echo_cancellation = false")
    if input_name is None or output_name is None:
        return EchoChoice(True, "auto, until both audio devices are open")
    if not same_device(input_name, output_name):
        return EchoChoice(True, f"auto: input {input_name!r} and output {output_name!r} are different devices")
    match = speakerphone_match(input_name)
    if match is None:
        return EchoChoice(
            True,
            f"auto: {input_name!r} is not a known speakerphone (add it to kiosk.audio.aec.SPEAKERPHONES, or set "
            "audio.echo_cancellation = false if it cancels its own echo)",
        )
    return EchoChoice(False, f"auto: {input_name!r} is a speakerphone ({match!r}) that cancels its own echo")
