"""The recommendation service: ``intentrec serve RUN_DIR`` (see `intentrec.serve.app`)."""

from intentrec.serve.engine import Engine, ServeSettings
from intentrec.serve.events import Event, EventStore, SQLiteEventStore, read_deletions

__all__ = ["Engine", "Event", "EventStore", "SQLiteEventStore", "ServeSettings", "read_deletions"]
