"""``kiosk sandbox``: the local LiveKit-compatible server, broker and scripted agent, in the foreground.

The sandbox is a package of its own beside ``kiosk`` (``kiosk_sandbox``) whose libraries (aiohttp, aiortc) come with
the ``sandbox`` extra. The daemon never imports it: only this command and ``kiosk demo`` do, inside the command, and
without it they print one line naming the extra to install instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

#: The sandbox's own package, then the libraries of the ``sandbox`` extra it imports (pyproject.toml).
SANDBOX_MODULES = ("kiosk_sandbox", "aiohttp", "aiortc")

#: The exit code when the sandbox cannot be imported (as for any other failed command).
EX_NO_SANDBOX = 1


def extra_hint(command: str, missing: str | None) -> str:
    """The one line that says ``command`` needs the ``sandbox`` extra (``missing``: the module not found) and how to
    install it (the README's command, run in the kiosk checkout)."""
    what = f" ({missing} is not installed)" if missing else ""
    return f"{command} needs the sandbox extra{what}: in the kiosk checkout run .venv/bin/pip install -e '.[sandbox]'"


def missing_sandbox_module() -> str | None:
    """The first of :data:`SANDBOX_MODULES` that cannot be found, or None; found, not imported (aiortc is slow)."""
    for name in SANDBOX_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing, or an entry without a spec in sys.modules
            found = False
        if not found:
            return name
    return None


def main(argv: list[str]) -> int:
    """Run ``kiosk sandbox`` (``kiosk_sandbox.cli.main``); without the ``sandbox`` extra, say so and return 1."""
    try:
        from kiosk_sandbox.cli import main as sandbox_main
    except ModuleNotFoundError as exc:  # kiosk_sandbox itself, aiortc, or one of aiortc's own (av, aioice, ...)
        print(extra_hint("kiosk sandbox", (exc.name or "").partition(".")[0] or None), file=sys.stderr)
        return EX_NO_SANDBOX
    return sandbox_main(argv)
