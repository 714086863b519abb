"""Secrets read from where the config points: a file, a systemd credential, or an environment variable.

A :class:`SecretSource` knows where a secret lives and can describe that place without ever revealing the value.
Values are handed out as :class:`pydantic.SecretStr`, whose ``repr`` and ``str`` are masked, and a file secret is
read again when the file changes on disk (key rotation without a restart).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from kiosk.config import BrokerConfig
from kiosk.errors import SecretError

SourceKind = Literal["file", "credential", "env"]

#: Where an installed kiosk.service may live; its LoadCredential= lines map credential names to files.
UNIT_PATHS: tuple[Path, ...] = (
    Path("/etc/systemd/system/kiosk.service"),
    Path("/usr/lib/systemd/system/kiosk.service"),
    Path("/lib/systemd/system/kiosk.service"),
)
#: Where the shipped unit loads credentials from (``LoadCredential=NAME:/etc/kiosk/NAME``).
CREDENTIAL_DIR = Path("/etc/kiosk")


def credential_map(unit_text: str) -> dict[str, Path]:
    """``LoadCredential=NAME:PATH`` lines of a unit file as ``{NAME: PATH}`` (the last line for a name wins)."""
    found: dict[str, Path] = {}
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("LoadCredential="):
            name, _, path = line.removeprefix("LoadCredential=").partition(":")
            if name and path.startswith("/"):
                found[name.strip()] = Path(path.strip())
    return found


def credential_file(name: str, *, units: tuple[Path, ...] = UNIT_PATHS) -> Path:
    """The file systemd would load credential ``name`` from: the installed unit's mapping, else /etc/kiosk/NAME."""
    for unit in units:
        try:
            mapping = credential_map(unit.read_text(encoding="utf-8"))
        except OSError:
            continue
        if name in mapping:
            return mapping[name]
    return CREDENTIAL_DIR / name


@dataclasses.dataclass(frozen=True)
class SecretStatus:
    """Where a secret comes from and whether it can be read right now (never the value)."""

    kind: SourceKind
    where: str
    readable: bool
    problem: str | None = None
    warning: str | None = None

    def describe(self) -> str:
        """One line for ``check-config`` and ``doctor``: the source, and readable or not and why."""
        state = "readable" if self.readable else f"NOT readable: {self.problem}"
        return f"{self.kind} {self.where} ({state})"


class SecretSource:
    """One secret's location; reads it on demand and re-reads a file when it changes."""

    def __init__(self, *, kind: SourceKind, name: str, environ: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.name = name
        self._environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], SecretStr] | None = None

    def __repr__(self) -> str:
        return f"SecretSource(kind={self.kind!r}, name={self.name!r})"

    @classmethod
    def from_broker(cls, broker: BrokerConfig, *, environ: Mapping[str, str] | None = None) -> SecretSource | None:
        """Build the source named by ``broker.api_key_*``, or None when the config names none."""
        if broker.api_key_file is not None:
            return cls(kind="file", name=str(broker.api_key_file), environ=environ)
        if broker.api_key_credential is not None:
            return cls(kind="credential", name=broker.api_key_credential, environ=environ)
        if broker.api_key_env is not None:
            return cls(kind="env", name=broker.api_key_env, environ=environ)
        return None

    def path(self) -> Path | None:
        """The file that holds the secret (for file and credential sources), or None.

        A credential outside systemd (no ``$CREDENTIALS_DIRECTORY``: ``check-config``, ``doctor``, ``run`` by hand)
        is read from the file the unit's ``LoadCredential=`` names, as systemd would.
        """
        if self.kind == "file":
            return Path(self.name)
        if self.kind == "credential":
            directory = self._environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                return credential_file(self.name)
            return Path(directory) / self.name
        return None

    def status(self) -> SecretStatus:
        """Check the source without revealing anything: exists, readable, non-empty, permissions."""
        where = self._where()
        try:
            self.get()
        except SecretError as exc:
            return SecretStatus(self.kind, where, readable=False, problem=str(exc))
        return SecretStatus(self.kind, where, readable=True, warning=self._mode_warning())

    def get(self) -> SecretStr:
        """Return the secret, re-reading a file whose size, mtime or inode changed since the last read."""
        if self.kind == "env":
            value = self._environ.get(self.name, "").strip()
            if not value:
                raise SecretError(
                    f"environment variable {self.name} is not set or empty: set it in the service's "
                    "Environment= or EnvironmentFile=, or use broker.api_key_file"
                )
            check_key(value, where=f"environment variable {self.name}")
            return SecretStr(value)
        path = self.path()
        assert path is not None
        return self._read_file(path)

    def _read_file(self, path: Path) -> SecretStr:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise SecretError(f"secret file {path} does not exist: create it with the key on one line") from None
        except OSError as exc:
            raise SecretError(f"secret file {path} cannot be read: {exc.strerror}") from None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if self._cached is not None and self._cached[0] == stamp:
                return self._cached[1]
            try:
                value = path.read_text(encoding="utf-8").strip()
            except PermissionError:
                raise SecretError(
                    f"secret file {path} is not readable by this user: "
                    f"run `chown root:kiosk {path} && chmod 640 {path}` or run as its owner"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise SecretError(f"secret file {path} cannot be read: {type(exc).__name__}") from None
            if not value:
                raise SecretError(f"secret file {path} is empty: put the key on one line")
            check_key(value, where=f"secret file {path}")
            secret = SecretStr(value)
            self._cached = (stamp, secret)
            return secret

    def _mode_warning(self) -> str | None:
        path = self.path()
        if self.kind != "file" or path is None:
            return None
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            return None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            who = "others" if mode & stat.S_IROTH else "its group"
            return f"secret file {path} is readable by {who} (mode {mode:04o}): run `chmod 600 {path}`"
        return None

    def _where(self) -> str:
        if self.kind == "credential":
            if not self._environ.get("CREDENTIALS_DIRECTORY"):
                return f"{self.name!r} from {self.path()} (as the unit's LoadCredential= loads it)"
            return f"{self.name!r} at {self.path()}"
        if self.kind == "env":
            return f"${self.name}"
        return self.name


_TYPOGRAPHIC_QUOTES = frozenset("\u2018\u2019\u201c\u201d\u00ab\u00bb")


def check_key(value: str, *, where: str) -> None:
    """Raise :class:`SecretError` unless ``value`` is one line of printable ASCII without spaces (an HTTP header
    value, RFC 9110 section 5.5). The message says what is wrong and where, never the key.
    """
    lines = value.splitlines()
    if len(lines) > 1:
        raise SecretError(f"{where} holds {len(lines)} lines: a key is one line; keep only the key")
    for position, char in enumerate(value, start=1):
        if char in _TYPOGRAPHIC_QUOTES:
            raise SecretError(
                f"{where} holds a typographic quote at character {position} (pasted from a document?): "
                "write the key without quotes"
            )
        if char in " \t":
            raise SecretError(f"{where} holds a space at character {position}: a key has none; keep only the key")
        if not ("!" <= char <= "~"):
            raise SecretError(
                f"{where} holds a character that is not printable ASCII at character {position} "
                f"(U+{ord(char):04X}): retype the key"
            )
