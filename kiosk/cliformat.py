"""Shared manners of the ``kiosk`` commands: help texts that show defaults, and a quiet exit on a closed pipe."""

from __future__ import annotations

import argparse
import os
import re
import sys


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after an option's help when it has a real default (not None, False or one given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def quiet_broken_pipe() -> None:
    """After stdout's reader went away (``kiosk -h | head -2``): point stdout at /dev/null so exit stays silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def describe(doc: str | None) -> str:
    """A module docstring's first line as a ``--help`` description, without its leading ````kiosk xxx``: ``."""
    first = (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""
    text = re.sub(r"^``kiosk [^`]*``:\s*", "", first)
    return text[:1].upper() + text[1:]
