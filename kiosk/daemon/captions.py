"""Captions of both sides of the conversation, from whichever channel the agent uses.

LiveKit agents (``livekit-agents``) publish transcriptions as text streams on topic ``lk.transcription``: one stream
per segment, attributes ``lk.segment_id``, ``lk.transcribed_track_id`` (the audio track that was transcribed) and
``lk.transcription_final``. The agent's own speech arrives as a delta stream (each chunk adds words; the closing
trailer says ``final``); the visitor's speech as one stream per interim or final hypothesis carrying the whole text.
Older agents send the SDK's transcription packets instead (``transcription_received``: segments with id, text and a
final flag). Oshara's agents send ``voice.reply`` data packets: ``{"type": "agent" | "user_text", "text": ...}``.

All of them come down to :class:`Caption` updates for one :class:`CaptionBook`: an interim update replaces the
segment's text, a final one commits it, and nothing after the final changes it. Typed text is shown once, when the
kiosk sends it; the agent's echo of it is dropped.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Literal

Role = Literal["visitor", "agent"]

TRANSCRIPTION_TOPIC = "lk.transcription"
SEGMENT_ATTRIBUTE = "lk.segment_id"
TRACK_ATTRIBUTE = "lk.transcribed_track_id"
FINAL_ATTRIBUTE = "lk.transcription_final"
#: Typed messages whose echo is still expected; older ones are forgotten.
MAX_PENDING_ECHOES = 20


@dataclasses.dataclass(frozen=True)
class Caption:
    """One update of one caption segment: ``text`` is the segment's whole text so far."""

    role: Role
    text: str
    segment_id: str
    final: bool


class CaptionBook:
    """Per-segment caption state; hands each update that changes something to ``on_caption``."""

    def __init__(self, *, on_caption: Callable[[Caption], None]) -> None:
        self._on_caption = on_caption
        self._segments: dict[str, Caption] = {}
        self._echoes: list[str] = []
        self._ids = itertools.count(1)

    def update(self, *, role: Role, text: str, segment_id: str, final: bool) -> Caption | None:
        """Apply one update; returns the caption passed on, or None when it changed nothing or came too late."""
        text = text.strip()
        before = self._segments.get(segment_id)
        if before is not None and (before.final or (before.text == text and before.final == final)):
            return None
        if not text:
            return None
        if role == "visitor" and final and self._is_echo(text):
            self._segments[segment_id] = Caption(role, text, segment_id, final)
            return None
        caption = Caption(role, text, segment_id, final)
        self._segments[segment_id] = caption
        self._on_caption(caption)
        return caption

    def line(self, role: Role, text: str) -> Caption | None:
        """A whole, final line with no segment of its own (``voice.reply``)."""
        return self.update(role=role, text=text, segment_id=f"line-{next(self._ids)}", final=True)

    def typed(self, text: str) -> Caption | None:
        """The visitor typed ``text``: shown now, and its echo from the agent dropped once."""
        caption = self.update(role="visitor", text=text, segment_id=f"typed-{next(self._ids)}", final=True)
        self._echoes = [*self._echoes[-(MAX_PENDING_ECHOES - 1) :], _normal(text)]
        return caption

    def _is_echo(self, text: str) -> bool:
        key = _normal(text)
        if key in self._echoes:
            self._echoes.remove(key)
            return True
        return False


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()
