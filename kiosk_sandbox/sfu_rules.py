"""What livekit-server makes of what a participant sends: its TrackInfo, its kind, and who gets its data.

Each rule is read from livekit-server's Go source (``pkg/rtc/participant.go``: ``addPendingTrackLocked`` and
``handleReceivedDataMessage``; ``pkg/rtc/room.go``: ``BroadcastDataPacketForRoom``; ``pkg/rtc/utils.go``:
``StreamFromTrackSource``) and kept to the parts a client can observe.
"""

from __future__ import annotations

from dataclasses import dataclass

from livekit.protocol import models
from livekit.protocol import rtc as signal

from kiosk_sandbox.ids import new_sid

_Kind = models.ParticipantInfo.Kind
_AUDIO = models.TrackType.AUDIO
_STREAM_BY_SOURCE = {
    models.TrackSource.CAMERA: "camera",
    models.TrackSource.MICROPHONE: "camera",
    models.TrackSource.SCREEN_SHARE: "screen",
    models.TrackSource.SCREEN_SHARE_AUDIO: "screen",
}


def track_info(request: signal.AddTrackRequest) -> models.TrackInfo:
    """The ``TrackInfo`` livekit-server announces for ``request``: what the publisher asked for, plus a sid.

    Audio features are deduplicated; ``stereo`` adds ``TF_STEREO`` and ``disable_dtx`` adds ``TF_NO_DTX``; an empty
    ``stream`` is derived from the source; audio tracks default to ``audio/opus`` unless the request names a codec.
    """
    features: list[models.AudioTrackFeature] = []
    for feature in request.audio_features:
        if feature not in features:
            features.append(feature)
    if request.stereo and models.AudioTrackFeature.TF_STEREO not in features:
        features.append(models.AudioTrackFeature.TF_STEREO)
    if request.disable_dtx and models.AudioTrackFeature.TF_NO_DTX not in features:
        features.append(models.AudioTrackFeature.TF_NO_DTX)
    trailer: list[models.PacketTrailerFeature] = []
    for trailer_feature in request.packet_trailer_features:
        if trailer_feature not in trailer:
            trailer.append(trailer_feature)
    codecs = [c.codec for c in request.simulcast_codecs if c.codec]
    mime_type = ""
    if request.type == _AUDIO:
        mime_type = _audio_mime(codecs[0]) if codecs else "audio/opus"
    info = models.TrackInfo(
        sid=new_sid("TR"),
        type=request.type,
        name=request.name,
        width=request.width,
        height=request.height,
        muted=request.muted,
        disable_dtx=request.disable_dtx,
        source=request.source,
        disable_red=request.disable_red,
        stereo=request.stereo,
        encryption=request.encryption,
        stream=request.stream or _STREAM_BY_SOURCE.get(request.source, "unknown"),
        backup_codec_policy=request.backup_codec_policy,
        audio_features=features,
        packet_trailer_features=trailer,
        mime_type=mime_type,
    )
    info.layers.extend(sorted(request.layers, key=lambda layer: int(layer.quality)))
    info.codecs.append(models.SimulcastCodecInfo(mime_type=mime_type, cid=request.cid))
    return info


def _audio_mime(codec: str) -> str:
    return codec if codec.startswith("audio/") else f"audio/{codec}"


def participant_kind(kind: str, *, agent_grant: bool) -> models.ParticipantInfo.Kind:
    """The participant kind of a token's ``kind`` claim (``"agent"``, ``"sip"``, ...); an agent grant means AGENT."""
    if agent_grant:
        return _Kind.AGENT
    names: dict[str, models.ParticipantInfo.Kind] = {name.lower(): value for name, value in _Kind.items()}  # type: ignore[misc]
    return names.get(kind.lower(), _Kind.STANDARD)


@dataclass(frozen=True)
class Sender:
    """Who sent a data packet, as the server knows it."""

    identity: str
    sid: str
    is_agent: bool
    hidden: bool = False


@dataclass(frozen=True)
class Delivery:
    """A data packet ready to forward: its bytes and who may receive it (empty = everyone but the sender)."""

    data: bytes
    identities: frozenset[str]
    sids: frozenset[str]

    def reaches(self, identity: str, sid: str) -> bool:
        """Whether the participant ``identity``/``sid`` receives this packet."""
        if not self.identities and not self.sids:
            return True
        return identity in self.identities or sid in self.sids


def route_data(sender: Sender, packet: models.DataPacket, kind: models.DataPacket.Kind) -> Delivery | None:
    """Stamp ``packet`` as livekit-server does and return where it goes, or None when the server keeps it.

    The server asserts the sender's identity, except that an agent may send a text stream header (or a chat
    message) on behalf of another participant: then the given identity stays and the text is marked
    ``generated``. Transcription packets are forwarded only from agents; metrics are never forwarded. Destinations
    come from ``destination_identities`` of the packet or of its user payload (copied to each other), and from the
    user payload's ``destination_sids``.
    """
    packet.kind = kind
    keep_identity = False
    which = packet.WhichOneof("value")
    if which == "user":
        user = packet.user
        user.participant_sid = "" if sender.hidden else sender.sid
        user.participant_identity = "" if sender.hidden else sender.identity
        if packet.destination_identities:
            del user.destination_identities[:]
            user.destination_identities.extend(packet.destination_identities)
        else:
            packet.destination_identities.extend(user.destination_identities)
    elif (which == "transcription" and not sender.is_agent) or which == "metrics":
        return None
    elif which == "chat_message" and _on_behalf(sender, packet):
        keep_identity = True
        packet.chat_message.generated = True
    elif which == "stream_header" and _on_behalf(sender, packet) and packet.stream_header.HasField("text_header"):
        keep_identity = True
        packet.stream_header.text_header.generated = True
    if not keep_identity:
        packet.participant_identity = "" if sender.hidden else sender.identity
    sids = frozenset(packet.user.destination_sids) if which == "user" else frozenset()
    return Delivery(packet.SerializeToString(), frozenset(packet.destination_identities), sids)


def _on_behalf(sender: Sender, packet: models.DataPacket) -> bool:
    return sender.is_agent and bool(packet.participant_identity) and packet.participant_identity != sender.identity
