"""The event store behind the service: fresh events per user, and the ledger of deleted users.

`EventStore` is the interface the service uses; `SQLiteEventStore` implements it on an embedded
SQLite database in WAL mode (readers never wait for the writer, nothing to run beside the service).
A server database can replace it by implementing the same methods.

Several service processes (``intentrec serve --workers N``) share one store, and through it the
state that must be the same in all of them: the deletion ledger and which model version serves (a
small key-value table, `setting`). `changes` is a cheap token that moves when another process has
written, so that each process re-reads that state only when it changed.

The deletion ledger is part of the same database: ``DELETE /v1/users/{user}`` removes the user's
events and records the deletion in one transaction, and `read_deletions` lets ``intentrec data
prepare`` (``--deletions DB``) and ``intentrec train`` (``data.deletions``) leave those users out of
every future training set.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Deletion", "Event", "EventStore", "SQLiteEventStore", "read_deletions"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user      TEXT    NOT NULL,
    item      TEXT    NOT NULL,
    timestamp INTEGER NOT NULL,
    event     TEXT,
    device    TEXT,
    weight    REAL,
    received  REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user, id);
CREATE TABLE IF NOT EXISTS deletions (
    user           TEXT PRIMARY KEY,
    deleted_at     REAL    NOT NULL,
    events_deleted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Event:
    """One interaction as the service receives it; ``timestamp`` in seconds since the epoch."""

    user: str
    item: str
    timestamp: int
    event: str | None = None
    device: str | None = None
    weight: float | None = None


@dataclass(frozen=True)
class Deletion:
    user: str
    deleted_at: float  # seconds since the epoch
    events_deleted: int  # fresh events removed from the store (the training log is excluded separately)


class EventStore(Protocol):
    """What the service needs from an event store."""

    def append(self, events: Sequence[Event]) -> int:
        """Store every event atomically (all or none); the number stored."""

    def events(self, user: str) -> list[Event]:
        """The user's stored events in arrival order."""

    def delete_user(self, user: str) -> Deletion:
        """Remove the user's events and record the deletion, atomically."""

    def deletions(self, since: float | None = None) -> list[Deletion]:
        """Every recorded deletion (or those recorded at or after ``since``), oldest first."""

    def changes(self) -> int:
        """A token that changes when the store has been written to (by this process or another)."""

    def setting(self, key: str) -> str | None:
        """A value shared by every process of the service, or None."""

    def set_setting(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


class SQLiteEventStore:
    """`EventStore` on SQLite in WAL mode. Thread-safe: a connection for writes and one for reads, each
    behind its own lock. Writes commit with a full sync (an acknowledged event survives a power cut),
    which can take a disk's worth of time; in WAL mode readers never wait for it, so the service's
    reads (on its event loop) do not stall behind a commit (run on a worker thread)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged event or deletion survives a power cut
        self._db.executescript(SCHEMA)
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)

    def append(self, events: Sequence[Event]) -> int:
        received = time.time()
        rows = [(e.user, e.item, e.timestamp, e.event, e.device, e.weight, received) for e in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (user, item, timestamp, event, device, weight, received) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def events(self, user: str) -> list[Event]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT user, item, timestamp, event, device, weight FROM events WHERE user = ? ORDER BY id", (user,)
            ).fetchall()
        return [Event(*row) for row in rows]

    def delete_user(self, user: str) -> Deletion:
        deleted_at = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._db.execute("DELETE FROM events WHERE user = ?", (user,)).rowcount
                previous = self._db.execute("SELECT events_deleted FROM deletions WHERE user = ?", (user,)).fetchone()
                total = removed + (previous[0] if previous else 0)
                self._db.execute(
                    "INSERT INTO deletions (user, deleted_at, events_deleted) VALUES (?, ?, ?) "
                    "ON CONFLICT (user) DO UPDATE SET deleted_at = excluded.deleted_at, "
                    "events_deleted = excluded.events_deleted",
                    (user, deleted_at, total),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Deletion(user, deleted_at, removed)

    def deletions(self, since: float | None = None) -> list[Deletion]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT user, deleted_at, events_deleted FROM deletions WHERE deleted_at >= ? ORDER BY deleted_at",
                (since if since is not None else float("-inf"),),
            )
            return [Deletion(*row) for row in rows.fetchall()]

    def changes(self) -> int:
        # SQLite's data_version moves when another connection commits: the reader's moves with every
        # write, this process's own (through the writer) and other processes'
        with self._read_lock:
            return int(self._reader.execute("PRAGMA data_version").fetchone()[0])

    def setting(self, key: str) -> str | None:
        with self._read_lock:
            row = self._reader.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def count(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()


def read_deletions(path: Path | str) -> list[str]:
    """The user ids recorded as deleted in a service database, opened read-only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such deletion ledger (the service's --db file)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [row[0] for row in db.execute("SELECT user FROM deletions ORDER BY deleted_at")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path}: not a service database with a deletion ledger ({exc})") from exc
