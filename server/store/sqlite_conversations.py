"""SQLite implementations of :class:`~server.store.ConversationStore` (tables ``conversations`` and ``turns``)
and :class:`~server.store.ResponseCache` (table ``response_cache``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from server.store.sqlite_db import SQLiteDatabase

if TYPE_CHECKING:  # imported when the store is first used (server.store.sqlite_db), not at start-up
    import sqlite_utils


class SQLiteConversations:
    """Turns are awaited writes: batched with other callers' (group commit), committed before they return."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def load_turns(self, conversation_id: str, *, owner: str | None = None
                         ) -> list[tuple[str, str]] | None:
        """A conversation's turns, oldest first; ``None`` when the id is unknown or (``owner`` given) not theirs."""

        def query(db: sqlite_utils.Database) -> list[tuple[str, str]] | None:
            found = db.execute("SELECT owner FROM conversations WHERE id = ?", [conversation_id]).fetchone()
            if found is None or (owner is not None and found[0] != owner):
                return None
            return [(role, content) for role, content in db.execute(
                "SELECT role, content FROM turns WHERE conversation_id = ? ORDER BY seq", [conversation_id])]

        return await self._db.call(query, "the conversation")

    async def append_turns(self, conversation_id: str, turns: Sequence[tuple[str, str]], ts: float, *,
                           owner: str | None = None) -> None:
        """Append turns (the conversation created if new, owned by ``owner``); committed when this returns."""
        rows = list(turns)

        def write(db: sqlite_utils.Database) -> None:
            db.execute("INSERT INTO conversations (id, created_at, updated_at, owner) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at",
                       [conversation_id, ts, ts, owner])
            start = db.execute("SELECT COALESCE(MAX(seq), 0) FROM turns WHERE conversation_id = ?",
                               [conversation_id]).fetchone()[0]
            db.conn.executemany("INSERT INTO turns (conversation_id, seq, role, content, ts) VALUES (?, ?, ?, ?, ?)",
                                [(conversation_id, start + i, role, content, ts)
                                 for i, (role, content) in enumerate(rows, 1)])

        await self._db.write(write, "the conversation turns")


class SQLiteCache:
    """Cache entries are queued writes: a lost one costs a provider call, nothing more."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        """A cached response stored at or after ``since_ts``, or ``None``."""

        def query(db: sqlite_utils.Database) -> dict[str, Any] | None:
            rows = list(db.query("SELECT provider, model, text, input_tokens, output_tokens FROM response_cache "
                                 "WHERE key = ? AND ts >= ?", [key, since_ts]))
            return rows[0] if rows else None

        return await self._db.call(query, "the response cache")

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        """Queue a response for the cache (replacing an older one under the same key)."""
        self._db.enqueue(lambda db: db["response_cache"].upsert({"key": key, "ts": ts, **entry}, pk="key"),
                         "a cache entry")
