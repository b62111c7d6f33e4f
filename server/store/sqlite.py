"""The full-mode store: every store protocol over one SQLite file (WAL mode) owned by one thread.

:class:`SQLiteStore` bundles the per-concern implementations (:mod:`.sqlite_calls`, :mod:`.sqlite_conversations`,
:mod:`.sqlite_patterns`, :mod:`.sqlite_state`) over one :class:`~server.store.sqlite_db.SQLiteDatabase`, which
owns the connection, migrates it on open and batches writes (see there for what is committed when). A SQLite
database belongs to one serving process (:mod:`server.store.serving_lock`); short CLI commands may open it
beside that process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.store.sqlite_audit import SQLiteAudit
from server.store.sqlite_calls import SQLiteCalls, SQLiteGuardrails
from server.store.sqlite_conversations import SQLiteCache, SQLiteConversations
from server.store.sqlite_db import BUSY_TIMEOUT_S, SQLiteDatabase
from server.store.sqlite_patterns import SQLitePatterns
from server.store.sqlite_state import SQLiteAgents, SQLiteIncidents, SQLiteKeys, SQLiteRuns, SQLiteWorkflows

COMMAND_BUSY_TIMEOUT_S = 30.0
"""How long a short command's write (``keys create``, ``patterns import`` …) waits for the serving process's write
lock. Under steady load the server takes the lock again within milliseconds of releasing it, and SQLite's busy
handler, which polls, can miss every gap for seconds: the command waits longer than the server's own 5 s."""


class SQLiteStore:
    """:class:`~server.store.Store` on SQLite.

    Args:
        path: database file (created with its parent folder), or ``":memory:"``.
        busy_timeout_s: how long a write waits for another process's write lock before it fails as ``locked``
            (default 5 s; short commands beside a server pass :data:`COMMAND_BUSY_TIMEOUT_S`).
        import_library: imports sqlite-utils before the store's first use (see :class:`SQLiteDatabase`).

    Raises:
        StoreUnavailable: the database cannot be opened (names the path and the reason); one that cannot be
            migrated fails its first uses the same way (see :class:`SQLiteDatabase`).
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S,
                 import_library: Callable[[], object] | None = None) -> None:
        self.database = SQLiteDatabase(path, busy_timeout_s=busy_timeout_s, import_library=import_library)
        self.calls = SQLiteCalls(self.database)
        self.guardrails = SQLiteGuardrails(self.database)
        self.conversations = SQLiteConversations(self.database)
        self.cache = SQLiteCache(self.database)
        self.patterns = SQLitePatterns(self.database)
        self.workflows = SQLiteWorkflows(self.database)
        self.runs = SQLiteRuns(self.database)
        self.incidents = SQLiteIncidents(self.database)
        self.keys = SQLiteKeys(self.database)
        self.audit = SQLiteAudit(self.database)
        self.agents = SQLiteAgents(self.database)

    @property
    def path(self) -> str:
        return self.database.path

    def close(self) -> None:
        """Write what is queued and close (blocking; see :meth:`SQLiteDatabase.close`)."""
        self.database.close()

    async def aclose(self) -> None:
        """Write what is queued and close, off the event loop and shielded from cancellation."""
        await self.database.aclose()
