"""Ways the scripted agent can behave besides conversing, for tests of how the kiosk copes with them.

- ``converse`` (the default): greet, then answer every visitor turn.
- ``end_call``: answer the visitor's first turn, say a goodbye (:func:`goodbye_clip`, 1.5 s, loud up to its last
  sample) and, once it has played out (``AudioSource.wait_for_playout``), delete the room through the RoomService
  (``DeleteRoom`` over Twirp, as ``livekit-agents``' ``EndCallTool`` does through ``JobContext.delete_room()`` after
  the goodbye speech is done). Everyone gets ``leave{ROOM_DELETED}``; the session ends as ``room_deleted``.
- ``stuck``: after the visitor's first turn, set ``lk.agent.state`` to ``speaking`` and never send audio again
  (livekit/agents#3427: an agent that claims to speak and stays silent); later turns are still recorded.

A test chooses one for every session with ``Sandbox(agent_behaviour=...)`` (``kiosk sandbox --agent-behaviour``),
or for one session by the agent name it asks for: ``<name>:end_call`` or ``<name>:stuck`` (Lyzr's ``agentId``, the
agent name of a self-minted token's dispatch or of the token endpoint's ``room_config``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import numpy as np
from livekit import api

from kiosk_sandbox.agent_audio import RATE, Samples

logger = logging.getLogger(__name__)

AgentBehaviour = Literal["converse", "end_call", "stuck"]
AGENT_BEHAVIOURS: tuple[AgentBehaviour, ...] = ("converse", "end_call", "stuck")
GOODBYE_TEXT = "Goodbye, thank you for visiting."
GOODBYE_S = 1.5
DELETE_TIMEOUT_S = 5.0


def behaviour_for(agent_name: str, default: AgentBehaviour) -> AgentBehaviour:
    """The behaviour named by ``agent_name``'s ``:<behaviour>`` suffix, else ``default``."""
    _, colon, suffix = agent_name.rpartition(":")
    for behaviour in AGENT_BEHAVIOURS:
        if colon and suffix == behaviour:
            return behaviour
    return default


def goodbye_clip(seconds: float = GOODBYE_S) -> Samples:
    """A voiced, speech-like goodbye at 16 kHz: harmonics of a falling pitch, syllable-rate loudness, no fade-out.

    Its loudness never drops below about -16 dBFS, so the last 0.25 s is as audible as the rest: a player that cuts
    the end short is caught.
    """
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = np.linspace(190.0, 140.0, len(t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voice = np.zeros(len(t))
    for k in range(1, 6):
        voice += np.sin(k * phase) / k
    syllables = 0.7 + 0.3 * np.cos(2 * np.pi * 4.0 * t)
    samples: Samples = (0.5 * voice / np.max(np.abs(voice)) * syllables * 32767).astype(np.int16)
    return samples


async def delete_room(url: str, api_key: str, api_secret: str, room: str) -> None:
    """``RoomService.DeleteRoom`` for ``room`` through the official server SDK, as ``JobContext.delete_room`` does.

    Failures are logged, not raised (livekit-agents logs them too).
    """
    try:
        async with asyncio.timeout(DELETE_TIMEOUT_S), api.LiveKitAPI(url, api_key, api_secret) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    except Exception:
        logger.exception("the agent could not delete room %s", room)
