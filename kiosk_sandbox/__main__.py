"""``python -m kiosk_sandbox``: the same as ``kiosk sandbox``."""

from __future__ import annotations

import sys

from kiosk_sandbox.cli import main

if __name__ == "__main__":
    sys.exit(main())
