"""kiosk: the daemon inside an unattended voice kiosk (button, LEDs, microphone, speaker, LiveKit voice agent)."""

from __future__ import annotations

__version__ = "0.1.0"
