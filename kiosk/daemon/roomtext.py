"""The agent's words in the room as captions: ``lk.transcription`` text streams, the SDK's older transcription
packets, and Oshara's ``voice.reply`` data packets.

A transcription names the track it transcribes (``lk.transcribed_track_id``): the visitor's when it is one of the sids
the kiosk's microphone was published under (a full reconnect republishes it under a new one), the agent's otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from livekit import rtc

from kiosk.daemon.captions import (
    FINAL_ATTRIBUTE,
    SEGMENT_ATTRIBUTE,
    TRACK_ATTRIBUTE,
    TRANSCRIPTION_TOPIC,
    CaptionBook,
    Role,
)

log = logging.getLogger(__name__)

REPLY_TOPIC = "voice.reply"


class RoomText:
    """Registers on ``room`` and turns its transcriptions into ``captions``; reads nothing once ``closing()``."""

    def __init__(
        self,
        *,
        room: rtc.Room,
        captions: CaptionBook,
        mic_sids: set[str],
        closing: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._room = room
        self._captions = captions
        self._mic_sids = mic_sids
        self._closing = closing
        self._spawn = spawn
        room.on("data_received", self._data_received)
        room.on("transcription_received", self._transcription_received)
        room.register_text_stream_handler(TRANSCRIPTION_TOPIC, self._transcription_stream)

    def _data_received(self, packet: rtc.DataPacket) -> None:
        if self._closing() or packet.topic != REPLY_TOPIC:
            return
        try:
            message = json.loads(packet.data)
            text = str(message.get("text") or message.get("message") or "")
        except (ValueError, AttributeError):
            log.debug("ignoring a voice.reply packet that is not JSON")
            return
        self._captions.line("visitor" if message.get("type") == "user_text" else "agent", text)

    def _transcription_stream(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        if self._closing():
            return
        self._spawn(self._read_transcription(reader))

    async def _read_transcription(self, reader: rtc.TextStreamReader) -> None:
        """One ``lk.transcription`` stream: each chunk updates the segment, the end (with its trailer) finishes it."""
        attributes = reader.info.attributes or {}
        segment = attributes.get(SEGMENT_ATTRIBUTE) or reader.info.stream_id
        role: Role = "visitor" if attributes.get(TRACK_ATTRIBUTE) in self._mic_sids else "agent"
        announced_final = attributes.get(FINAL_ATTRIBUTE) == "true"
        text = ""
        try:
            async for chunk in reader:
                text += chunk
                if not announced_final:
                    self._captions.update(role=role, text=text, segment_id=segment, final=False)
        except rtc.StreamError as exc:
            log.debug("a transcription stream ended early: %s", exc)
            return
        final = (reader.info.attributes or {}).get(FINAL_ATTRIBUTE) == "true"
        self._captions.update(role=role, text=text, segment_id=segment, final=final)

    def _transcription_received(
        self,
        segments: list[rtc.TranscriptionSegment],
        participant: rtc.Participant | None,
        publication: rtc.TrackPublication | None,
    ) -> None:
        """The SDK's older transcription packets, for agents that still send them."""
        if self._closing():
            return
        mine = participant is not None and participant.identity == self._room.local_participant.identity
        role: Role = "visitor" if mine or (publication is not None and publication.sid in self._mic_sids) else "agent"
        for segment in segments:
            self._captions.update(role=role, text=segment.text, segment_id=segment.id, final=segment.final)
