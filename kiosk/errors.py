"""The kiosk's exception tree.

Every error the kiosk raises on purpose derives from :class:`KioskError` and also from the builtin it resembles, so
callers that only know the builtin still catch it::

    KioskError
    ├── ConfigError(KioskError, ValueError)        bad or unreadable configuration (exit 78)
    ├── SecretError(KioskError, PermissionError)   a secret source is missing or unreadable
    ├── BrokerError(KioskError, RuntimeError)      the token broker failed; ``reason`` names how
    │   └── ClockError(BrokerError)                the grant's validity disagrees with the local clock
    ├── StateDirError(KioskError, OSError)        the state directory cannot be written (read-only, full)
    ├── ConnectError(KioskError, ConnectionError)  joining the LiveKit room failed
    ├── AudioDeviceError(KioskError, OSError)      an audio device is missing, wrong or failed
    └── ControlError(KioskError, OSError)          the control socket could not be reached or answered badly

Messages never contain secrets: API keys and tokens are never formatted into them.
"""

from __future__ import annotations

from kiosk.reasons import FailureReason


class KioskError(Exception):
    """Root of every error the kiosk raises on purpose."""

    reason: FailureReason = FailureReason.INTERNAL

    def __init__(self, message: str, *, reason: FailureReason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(KioskError, ValueError):
    """The configuration is invalid or cannot be read."""


class SecretError(KioskError, PermissionError):
    """A secret (API key, LiveKit secret) cannot be read from where the config says it is."""

    reason = FailureReason.SECRET_UNREADABLE


class BrokerError(KioskError, RuntimeError):
    """The token broker did not give a usable grant or did not end a session."""

    reason = FailureReason.BROKER_ERROR


class ClockError(BrokerError):
    """The grant is not yet valid or already expired by the local clock."""

    reason = FailureReason.CLOCK


class StateDirError(KioskError, OSError):
    """The state directory (``daemon.state_dir``) cannot be written: read-only, full, or not the service's."""

    reason = FailureReason.STATE_DIR


class ConnectError(KioskError, ConnectionError):
    """Joining the LiveKit room failed."""

    reason = FailureReason.CONNECT_FAILED


class AudioDeviceError(KioskError, OSError):
    """An audio device is missing, misnamed, or failed while in use."""

    reason = FailureReason.AUDIO_DEVICE


class ControlError(KioskError, OSError):
    """The daemon's control socket is unreachable or answered with an error."""
