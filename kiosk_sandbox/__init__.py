"""A local stand-in for LiveKit Cloud, a vendor broker and a voice agent (extra ``sandbox``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiosk_sandbox.server import Sandbox

__all__ = ["Sandbox"]


def __getattr__(name: str) -> Any:
    # Imported on first use: parents that only read the sandbox's ready line need not load aiohttp and aiortc.
    if name == "Sandbox":
        from kiosk_sandbox.server import Sandbox

        return Sandbox
    raise AttributeError(name)
