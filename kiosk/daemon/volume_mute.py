"""The kiosk's own controls: volume buttons and a microphone privacy mute.

``trigger.volume_up_pin`` / ``trigger.volume_down_pin`` step the output volume (the mixer's master volume) by
:data:`VOLUME_STEP` and play a short tone at the new level; ``trigger.mute_pin`` toggles the microphone mute (the
audio engine then passes only silence to the pre-roll, a session and voice wake; the LEDs show it; a tone says
"muted" or "unmuted"). Volume and mute are kept in ``<state_dir>/controls.json`` (written atomically off the event
loop), so a restart keeps them: a privacy mute must not lift itself because the daemon restarted.

The buttons are :class:`kiosk.trigger.ButtonTrigger` s on their own pins (same wiring, pull and debouncing as the
main button); their edges reach :class:`DeviceControls` on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiosk.audio import AudioEngine, Chime
from kiosk.config import KioskConfig
from kiosk.trigger import ButtonEvent, ButtonTrigger

log = logging.getLogger(__name__)

#: One press changes the output volume by this much (of full scale), within [VOLUME_MIN, 1].
VOLUME_STEP = 0.1
#: The lowest volume the buttons reach: never silent, so a visitor can always hear the agent.
VOLUME_MIN = 0.1
STATE_FILE = "controls.json"


def load_state(state_dir: Path) -> dict[str, Any]:
    """The saved ``{"volume": float, "muted": bool}`` (either may be missing); {} when there is none or it is bad."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s): using audio.output_volume and an unmuted microphone", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(data.get("volume"), int | float) and 0.0 <= data["volume"] <= 1.0:
        out["volume"] = float(data["volume"])
    if isinstance(data.get("muted"), bool):
        out["muted"] = data["muted"]
    return out


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Write the state atomically (temporary file, fsync, rename). Blocking: call it off the event loop."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class DeviceControls:
    """Volume and mute: the state, what a button press does to it, and who is told.

    ``on_change(state)`` receives ``{"volume": float, "muted": bool}`` after every change (the events stream);
    ``on_mute(muted)`` tells the LEDs; ``in_session()`` says whether a session is open.
    """

    def __init__(
        self,
        *,
        config: KioskConfig,
        audio: AudioEngine,
        on_change: Callable[[dict[str, Any]], None],
        on_mute: Callable[[bool], None],
    ) -> None:
        self._state_dir = config.daemon.state_dir
        self._audio = audio
        self._on_change = on_change
        self._on_mute = on_mute
        self._buttons: list[ButtonTrigger] = []
        self._saving: asyncio.Task[None] | None = None
        self._dirty = False
        saved = load_state(self._state_dir)
        # Only a kiosk that has the button may keep what the button set: with the mute button gone, a kept mute
        # could never be lifted; with the volume buttons gone, audio.output_volume is the volume again.
        trigger = config.trigger
        if trigger.volume_up_pin is None and trigger.volume_down_pin is None:
            saved.pop("volume", None)
        if trigger.mute_pin is None:
            saved.pop("muted", None)
        audio.mixer.volume = saved.get("volume", config.audio.output_volume)
        audio.muted = saved.get("muted", False)
        on_mute(audio.muted)
        if saved:
            log.info("volume %.0f %%, microphone %s (kept in %s)", self.volume * 100, self._mute_word(), STATE_FILE)

    @property
    def volume(self) -> float:
        """The output volume (0..1)."""
        return self._audio.mixer.volume

    @property
    def muted(self) -> bool:
        """Whether the microphone is muted."""
        return self._audio.muted

    def state(self) -> dict[str, Any]:
        """``{"volume": float, "muted": bool}`` for ``kiosk status`` and the events stream."""
        return {"volume": round(self.volume, 2), "muted": self.muted}

    def open_buttons(
        self, config: KioskConfig, *, loop: asyncio.AbstractEventLoop, pin_factory: Any, opener: Callable[..., Any]
    ) -> None:
        """Open the volume and mute buttons that are configured; ``opener(name, make)`` degrades a missing one."""
        wanted: list[tuple[str, int | None, Callable[[], None]]] = [
            ("volume up button", config.trigger.volume_up_pin, lambda: self.step_volume(+1)),
            ("volume down button", config.trigger.volume_down_pin, lambda: self.step_volume(-1)),
            ("mute button", config.trigger.mute_pin, self.toggle_mute),
        ]
        for name, pin, action in wanted:
            if pin is None:
                continue
            pin_config = config.trigger.model_copy(update={"button_pin": pin})

            def on_event(event: ButtonEvent, _t: float, action: Callable[[], None] = action) -> None:
                if event == ButtonEvent.PRESS:
                    action()

            button = opener(
                name,
                lambda pin_config=pin_config, on_event=on_event: ButtonTrigger(
                    config=pin_config, loop=loop, on_event=on_event, pin_factory=pin_factory
                ),
            )
            if button is not None:
                self._buttons.append(button)

    def step_volume(self, direction: int) -> None:
        """One volume step up (+1) or down (-1), then a short tone at the new level."""
        volume = round(min(1.0, max(VOLUME_MIN, self.volume + direction * VOLUME_STEP)), 2)
        self._audio.mixer.volume = volume
        log.info("volume %.0f %%", volume * 100)
        self._audio.play_chime(Chime.VOLUME, always=True)
        self._changed()

    def toggle_mute(self) -> None:
        """Mute the microphone, or unmute it; the LEDs show it and a tone says which."""
        self.set_muted(not self.muted)

    def set_muted(self, muted: bool) -> None:
        """Mute (True) or unmute the microphone."""
        self._audio.muted = muted
        log.info("microphone %s", self._mute_word())
        self._on_mute(muted)
        self._audio.play_chime(Chime.MUTED if muted else Chime.UNMUTED, always=True)
        self._changed()

    def _mute_word(self) -> str:
        return "muted" if self.muted else "on"

    def _changed(self) -> None:
        self._on_change(self.state())
        self._dirty = True
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save(), name="controls-save")

    async def _save(self) -> None:
        # Presses during a write are folded into the next one: one writer, the latest state.
        while self._dirty:
            self._dirty = False
            try:
                await asyncio.to_thread(save_state, self._state_dir, self.state())
            except OSError as exc:
                log.warning("cannot keep volume and mute in %s: %s", self._state_dir / STATE_FILE, exc)

    async def aclose(self) -> None:
        """Release the buttons and finish writing the state."""
        for button in self._buttons:
            button.close()
        self._buttons = []
        if self._saving is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._saving
