"""Session records on disk, so that a session a crash or power loss left open is ended at the next start.

One JSON file per session in ``<state_dir>/sessions/<id>.json`` (directory 0700, files 0600), written atomically
(temporary file, fsync, rename, fsync of the directory). A record is written *before* the start request is sent,
gets the room once the broker names it, and is removed only when the end is confirmed. It holds the dialect, the
broker's address, the identity and the room: never a token or a key.

A record without a room means the start's answer never arrived: for Lyzr there is then nothing the kiosk can end
(it never learned the room; Lyzr's own session timeout ends it); the LiveKit dialects choose the room before sending,
so their records always have one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from kiosk.config import Dialect

from .connection import EndTicket

log = logging.getLogger(__name__)


def current_boot_id() -> str:
    """This boot's id (records from an earlier boot are orphans whatever their pid), or "" if unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


#: errno values that mean "no room left" on the state directory's file system (ENOSPC) or in the user's quota.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: errno values that mean the file system is mounted read-only.
_READ_ONLY = frozenset({errno.EROFS})
#: errno values that mean the service user may not write there.
_DENIED = frozenset({errno.EACCES, errno.EPERM})


def state_dir_problem(exc: OSError, directory: Path) -> str:
    """What is wrong with the state directory, and what to do about it, from an ``OSError`` writing into it."""
    where = f"the state directory {directory.parent} (daemon.state_dir)"
    if exc.errno in _FULL:
        return (
            f"{where} is full ({exc.strerror}): free space on its file system (`df -h {directory.parent}`) or "
            "point daemon.state_dir at one with room"
        )
    if exc.errno in _READ_ONLY:
        return (
            f"{where} is on a read-only file system ({exc.strerror}): remount it read-write or point "
            "daemon.state_dir at a writable directory (systemd's StateDirectory=kiosk gives /var/lib/kiosk)"
        )
    if exc.errno in _DENIED:
        return (
            f"{where} is not writable by the service user ({exc.strerror}): `chown -R kiosk: {directory.parent}` "
            "or point daemon.state_dir at the service's own directory"
        )
    return f"{where} cannot be written ({exc.strerror or type(exc).__name__}): check the directory and its disk"


class LedgerEntry(BaseModel):
    """One broker session started (or starting) and not yet ended, as kept on disk until its end lands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    dialect: Dialect
    url: str | None
    identity: str
    room: str | None = None
    started_at: dt.datetime
    pid: int
    boot_id: str = ""

    def owned_by_live_process(self) -> bool:
        """True when another process that wrote this record still runs (same boot, its pid alive)."""
        if not self.boot_id or self.boot_id != current_boot_id() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def with_ticket(self, ticket: EndTicket) -> LedgerEntry:
        """This record with the room (and address and identity) from ``ticket``."""
        return self.model_copy(update={"room": ticket.room, "url": ticket.url, "identity": ticket.identity})

    def ticket(self) -> EndTicket | None:
        """What ending this session needs, or None when the room was never learned."""
        if self.room is None:
            return None
        return EndTicket(dialect=self.dialect, url=self.url, room=self.room, identity=self.identity)


class SessionLedger:
    """The session records in one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "sessions"

    def __repr__(self) -> str:
        return f"SessionLedger({str(self.directory)!r})"

    def begin(self, *, dialect: Dialect, url: str | None, identity: str) -> LedgerEntry:
        """Write a record for a session about to be started (raises OSError if the state dir is unusable)."""
        record = LedgerEntry(
            id=f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}",
            dialect=dialect,
            url=url,
            identity=identity,
            started_at=dt.datetime.now(dt.UTC),
            pid=os.getpid(),
            boot_id=current_boot_id(),
        )
        self._write(record)
        return record

    def save(self, record: LedgerEntry) -> None:
        """Write ``record`` atomically (temporary file, fsync, rename, fsync of the directory)."""
        self._write(record)

    def remove(self, record_id: str) -> None:
        """Forget a session whose end was confirmed (a missing record is fine)."""
        path = self._path(record_id)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            self._sync_dir()

    def problem(self) -> str | None:
        """What keeps session records from being written here (see :func:`state_dir_problem`), or None.

        Writes and removes one small probe file, synced like a record (so a full disk shows, not only a read-only
        one).
        """
        probe = LedgerEntry(
            id=f"probe-{secrets.token_hex(4)}",
            dialect="self",
            url=None,
            identity="probe",
            started_at=dt.datetime.now(dt.UTC),
            pid=os.getpid(),
        )
        try:
            self._write(probe)
            self.remove(probe.id)
        except OSError as exc:
            return state_dir_problem(exc, self.directory)
        return None

    def pending(self) -> list[LedgerEntry]:
        """Every record on disk, oldest first; unreadable ones are set aside (``.bad``) and logged."""
        if not self.directory.is_dir():
            return []
        records: list[LedgerEntry] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(LedgerEntry.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError, ValueError) as exc:
                log.error("session record %s is unreadable (%s); moving it aside", path, type(exc).__name__)
                with contextlib.suppress(OSError):
                    path.replace(path.with_suffix(".bad"))
        for leftover in self.directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        return sorted(records, key=lambda record: record.started_at)

    def _path(self, record_id: str) -> Path:
        if not record_id or "/" in record_id or record_id.startswith("."):
            raise ValueError(f"bad session record id {record_id!r}")
        return self.directory / f"{record_id}.json"

    def _write(self, record: LedgerEntry) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(record.id)
        temporary = self.directory / f".{record.id}.{secrets.token_hex(4)}.tmp"
        data = record.model_dump_json(indent=2).encode("utf-8")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        self._sync_dir()

    def _sync_dir(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
