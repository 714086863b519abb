"""A local stand-in for LiveKit Cloud, a vendor broker and a voice agent (extra ``sandbox``)."""

from __future__ import annotations

from kiosk.sandbox.server import Sandbox

__all__ = ["Sandbox"]
