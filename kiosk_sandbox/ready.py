"""The line ``kiosk sandbox`` prints once it serves, for parents that run it as a subprocess."""

from __future__ import annotations

import json
from typing import Any

READY_PREFIX = "SANDBOX READY "


def parse_ready(line: str) -> dict[str, Any] | None:
    """The sandbox's URLs and keys from its ready line, or None for any other line of its output."""
    if not line.startswith(READY_PREFIX):
        return None
    info: dict[str, Any] = json.loads(line[len(READY_PREFIX) :])
    return info
