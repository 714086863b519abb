"""Heavy modules load only where they are used: the daemon of a vendor dialect never imports ``livekit.api`` nor
LiveKit's protobuf modules (``livekit.protocol``)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("livekit.api", "livekit.protocol", "aiohttp", "jwt", "cryptography")


def loaded_after(code: str) -> list[str]:
    """The :data:`HEAVY` modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


def test_daemon_and_cli_do_not_import_the_server_api() -> None:
    """Importing the daemon, the CLI and every broker dialect's module loads none of livekit.api's stack, nor the
    protobuf modules only the LiveKit dialects use."""
    assert loaded_after("import kiosk.cli, kiosk.daemon.app, kiosk.broker, kiosk.broker.livekit_dialects") == []


def test_the_self_dialect_loads_it_when_built() -> None:
    """The ``self`` dialect mints tokens with livekit.api: it is loaded when that broker is built, not at a press."""
    code = (
        "from kiosk.broker.livekit_dialects import SelfMintBroker\n"
        "from kiosk.secret import SecretSource\n"
        "SelfMintBroker(livekit_url='ws://127.0.0.1:7880', api_key='k', secret=SecretSource(kind='env', name='X', environ={'X': 's' * 32}),"
        " identity='kiosk', name='kiosk', agent_name=None, room_prefix='kiosk', ttl_s=600, overrides={})"
    )
    assert {"livekit.api", "livekit.protocol"} <= set(loaded_after(code))
