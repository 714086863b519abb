"""One warning for a failure that repeats: the first at WARNING with its traceback, the rest at DEBUG.

Per-frame work (100 frames a second) that starts failing would otherwise fill the journal with identical
tracebacks and hide what went wrong first. A success re-arms the warning and says how many failed in between.
"""

from __future__ import annotations

import logging


class RepeatedFailure:
    """Logging policy for one repeating failure ``what`` on ``logger``."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.count = 0

    def failed(self) -> None:
        """Call from an ``except`` block: the first failure in a row is a warning with the traceback."""
        self.count += 1
        if self.count == 1:
            self._log.warning("%s failed (further failures are logged at debug)", self._what, exc_info=True)
        else:
            self._log.debug("%s failed again (%d in a row)", self._what, self.count, exc_info=True)

    def succeeded(self) -> None:
        """Call after a success: ends a run of failures, saying how long it was."""
        if self.count:
            self._log.info("%s works again after %d failures", self._what, self.count)
            self.count = 0
