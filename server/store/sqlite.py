"""SQLite store through sqlite-utils, in WAL mode, owned by one dedicated thread.

A SQLite connection belongs to the thread that opened it, and anyio's worker threads rotate, so one thread
opens the database, migrates it and serves every operation from a queue. Writes are fire-and-forget and
batched (everything queued since the last batch goes in one transaction); reads are queued behind the
writes before them, so a read sees every record queued earlier, and answer through a future the event loop
awaits without blocking.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from server.store import (
    GROUP_COLUMNS,
    AggregateRow,
    ApiKeyRecord,
    CallRecord,
    CallRow,
    GroupBy,
    GroupTotals,
    GuardrailDecision,
    PatternRecord,
    WorkflowRecord,
)
from server.store import sqlite_ops as ops_sql
from server.store import sqlite_patterns as patterns_sql
from server.store.migrations import migrate

logger = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = object()


@dataclass(frozen=True, slots=True)
class _Write:
    """A queued fire-and-forget write, applied in the next batch's transaction."""

    fn: Callable[[sqlite_utils.Database], None]
_CLOSE_TIMEOUT_S = 30.0
_LINGER_S = 0.005
_LINGER_BELOW = 500


class SQLiteStore:
    """The full-mode store.

    Args:
        path: database file (created with its parent folder), or ``":memory:"``.

    Raises:
        sqlite3.Error / OSError: the database cannot be opened or migrated (raised from the constructor).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        opened: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(opened,), name="sqlite-store", daemon=True)
        self._thread.start()
        opened.result()  # re-raises an open or migration failure here, in the caller

    # -- the owning thread ------------------------------------------------------------------------------

    def _open(self) -> sqlite_utils.Database:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite_utils.Database(self.path)
            db.enable_wal()
        else:
            db = sqlite_utils.Database(memory=True)
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        # Reads (pattern search, lookups) touch pages all over a library of thousands of patterns: a 32 MB
        # page cache and memory-mapped reads keep them off the read() syscall path.
        db.execute("PRAGMA cache_size=-32000")
        db.execute("PRAGMA mmap_size=268435456")
        migrate(db)
        return db

    def _run(self, opened: Future[None]) -> None:
        try:
            db = self._open()
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            self._serve(db)
        finally:
            db.close()

    def _serve(self, db: sqlite_utils.Database) -> None:
        while True:
            item = self._queue.get()
            batch: list[CallRecord | _Write] = []
            lingered = False
            while True:
                if isinstance(item, (CallRecord, _Write)):
                    batch.append(item)
                else:
                    self._write(db, batch)
                    batch = []
                    if item is _STOP:
                        return
                    self._read(db, *item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    if lingered or not batch or len(batch) >= _LINGER_BELOW:
                        break
                    # A few records in: wait a moment (GIL released) so a burst lands in one transaction
                    # instead of one commit per record. Reads queued meanwhile wait at most this long.
                    lingered = True
                    time.sleep(_LINGER_S)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
            self._write(db, batch)

    @staticmethod
    def _write(db: sqlite_utils.Database, batch: list[CallRecord | _Write]) -> None:
        """Everything queued since the last batch, in one transaction (call records as one bulk insert)."""
        if not batch:
            return
        records = [item for item in batch if isinstance(item, CallRecord)]
        try:
            with db.conn:
                if records:
                    ops_sql.insert_calls(db, records)
                for item in batch:
                    if isinstance(item, _Write):
                        item.fn(db)
        except Exception:
            # Recording must never take the server down; the count says what was lost.
            logger.exception("could not store a batch of %d write(s)", len(batch))

    @staticmethod
    def _read(db: sqlite_utils.Database, fn: Callable[[sqlite_utils.Database], Any], future: Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(db))
        except BaseException as exc:
            future.set_exception(exc)

    # -- the async side ---------------------------------------------------------------------------------

    async def _submit(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        if self._closed:
            raise RuntimeError("store is closed")
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return await asyncio.wrap_future(future)

    def record_call(self, record: CallRecord) -> None:
        """Queue one record; returns at once (a lock-free queue put, no I/O on the caller's thread)."""
        if self._closed:
            logger.warning("call record dropped: store already closed")
            return
        self._queue.put(record)

    async def group_totals(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[GroupTotals]:
        """Totals per group over ``[since_ts, until_ts)``, latencies sorted (SQL does the sorting)."""
        if group_by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {group_by!r}")

        def query(db: sqlite_utils.Database) -> list[GroupTotals]:
            groups: dict[str, GroupTotals] = {}
            rows = db.execute(
                f"SELECT {group_by}, status, latency_ms, input_tokens, output_tokens, cost_usd FROM calls "
                f"WHERE ts >= ? AND ts < ? ORDER BY {group_by}, latency_ms",
                [since_ts, until_ts],
            )
            for key, *values in rows:
                key = key or ""
                totals = groups.get(key)
                if totals is None:
                    totals = groups[key] = GroupTotals(key=key)
                totals.add(*values)
            return list(groups.values())

        return await self._submit(query)

    async def cost_by_provider(self, since_ts: float) -> dict[str, float]:
        """USD per provider since ``since_ts``."""
        sql = "SELECT provider, SUM(cost_usd) FROM calls WHERE ts >= ? AND cost_usd > 0 GROUP BY provider"
        return await self._submit(lambda db: {name: cost for name, cost in db.execute(sql, [since_ts])})

    async def load_turns(self, conversation_id: str, *, owner: str | None = None
                         ) -> list[tuple[str, str]] | None:
        """A conversation's turns, oldest first; ``None`` when the id is unknown or (``owner`` given) not theirs."""

        def query(db: sqlite_utils.Database) -> list[tuple[str, str]] | None:
            found = db.execute("SELECT owner FROM conversations WHERE id = ?", [conversation_id]).fetchone()
            if found is None or (owner is not None and found[0] != owner):
                return None
            return [(role, content) for role, content in db.execute(
                "SELECT role, content FROM turns WHERE conversation_id = ? ORDER BY seq", [conversation_id])]

        return await self._submit(query)

    def append_turns(self, conversation_id: str, turns: list[tuple[str, str]], ts: float, *,
                     owner: str | None = None) -> None:
        """Queue turns for a conversation (created if new, owned by ``owner``); reads queued later see them."""

        def write(db: sqlite_utils.Database) -> None:
            db.execute("INSERT INTO conversations (id, created_at, updated_at, owner) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at",
                       [conversation_id, ts, ts, owner])
            start = db.execute("SELECT COALESCE(MAX(seq), 0) FROM turns WHERE conversation_id = ?",
                               [conversation_id]).fetchone()[0]
            db["turns"].insert_all({"conversation_id": conversation_id, "seq": start + i, "role": role,
                                    "content": content, "ts": ts} for i, (role, content) in enumerate(turns, 1))

        self._put_write(write)

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        """A cached response stored at or after ``since_ts``, or ``None``."""

        def query(db: sqlite_utils.Database) -> dict[str, Any] | None:
            rows = list(db.query("SELECT * FROM response_cache WHERE key = ? AND ts >= ?", [key, since_ts]))
            return rows[0] if rows else None

        return await self._submit(query)

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        """Queue a response for the cache (replacing an older one under the same key)."""
        self._put_write(lambda db: db["response_cache"].upsert({"key": key, "ts": ts, **entry}, pk="key"))

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        """Store the pattern's next version in one transaction (a read, not a queued write: the caller needs
        the version number, and the owning thread serialises every read-modify-write)."""
        return await self._submit(lambda db: patterns_sql.put(db, record, keep_registered))

    async def get_pattern(self, name: str, version: int | None = None) -> PatternRecord | None:
        """The current (or given) version of a pattern, or ``None``."""
        return await self._submit(lambda db: patterns_sql.get(db, name, version))

    async def pattern_versions(self, name: str) -> list[int]:
        """Every version number of ``name``, ascending."""
        return await self._submit(lambda db: patterns_sql.versions(db, name))

    async def list_patterns(self) -> list[PatternRecord]:
        """Every pattern's current version, by name."""
        return await self._submit(patterns_sql.current_all)

    async def search_patterns(self, terms: Sequence[str], tags: Sequence[str], limit: int
                              ) -> list[tuple[PatternRecord, float]]:
        """FTS5 search ranked by weighted bm25 (see :mod:`server.store.sqlite_patterns`)."""
        return await self._submit(lambda db: patterns_sql.search(db, list(terms), list(tags), limit))

    async def pattern_names(self, prefix: str, limit: int) -> list[str]:
        """Names starting with ``prefix``."""
        return await self._submit(lambda db: patterns_sql.names(db, prefix, limit))

    async def put_workflow(self, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
        """Save a workflow definition in one transaction (a new version when it changed)."""
        import json

        text = json.dumps(definition, ensure_ascii=False, sort_keys=True)

        def put(db: sqlite_utils.Database) -> tuple[WorkflowRecord, bool]:
            with db.conn:
                row = db.execute("SELECT version, definition, created_at FROM workflows WHERE name = ?",
                                 [name]).fetchone()
                if row is not None and row[1] == text:
                    return WorkflowRecord(name, row[0], definition, row[2], ts), False
                version, created = (row[0] + 1, row[2]) if row else (1, ts)
                db.execute("INSERT INTO workflows (name, version, definition, created_at, updated_at) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET version = excluded.version, "
                           "definition = excluded.definition, updated_at = excluded.updated_at",
                           [name, version, text, created, ts])
            return WorkflowRecord(name, version, definition, created, ts), True

        return await self._submit(put)

    async def get_workflow(self, name: str) -> WorkflowRecord | None:
        """The saved workflow ``name``, or ``None``."""
        rows = await self._submit(lambda db: list(db.execute(
            "SELECT name, version, definition, created_at, updated_at FROM workflows WHERE name = ?", [name])))
        return _workflow(rows[0]) if rows else None

    async def list_workflows(self) -> list[WorkflowRecord]:
        """Every saved workflow, by name."""
        rows = await self._submit(lambda db: list(db.execute(
            "SELECT name, version, definition, created_at, updated_at FROM workflows ORDER BY name")))
        return [_workflow(row) for row in rows]

    async def call_rows(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[CallRow]:
        """Raw records in ``[since_ts, until_ts)`` (see :meth:`server.store.Store.call_rows`)."""
        return await self._submit(lambda db: ops_sql.call_rows(db, since_ts, until_ts, group_by))

    async def aggregate_rows(self, since_ts: float, until_ts: float, group_by: GroupBy, period_s: int = 60
                             ) -> list[AggregateRow]:
        """Per-minute or per-hour aggregates per group key."""
        return await self._submit(lambda db: ops_sql.aggregate_rows(db, since_ts, until_ts, group_by, period_s))

    async def roll_up(self, before_ts: float) -> int:
        """Delete raw records older than ``before_ts`` in one transaction; their aggregates stay."""
        return await self._submit(lambda db: ops_sql.roll_up(db, before_ts))

    async def rolled_up_before(self) -> float:
        return await self._submit(ops_sql.rolled_up_before)

    async def put_incident(self, incident: dict[str, Any]) -> None:
        await self._submit(lambda db: ops_sql.put_incident(db, incident))

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        return await self._submit(lambda db: ops_sql.get_incident(db, incident_id))

    async def list_incidents(self, *, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        return await self._submit(lambda db: ops_sql.list_incidents(db, active_only, limit))

    async def put_api_key(self, record: ApiKeyRecord) -> None:
        """Insert a key record in its own transaction."""

        def write(db: sqlite_utils.Database) -> None:
            with db.conn:
                db["api_keys"].insert(asdict(record))

        await self._submit(write)

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key record with this hash (an indexed lookup), or ``None``."""

        def query(db: sqlite_utils.Database) -> ApiKeyRecord | None:
            rows = list(db.query("SELECT * FROM api_keys WHERE key_hash = ?", [key_hash]))
            return ApiKeyRecord(**rows[0]) if rows else None

        return await self._submit(query)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key record, oldest first."""
        return await self._submit(lambda db: [ApiKeyRecord(**row) for row in
                                              db.query("SELECT * FROM api_keys ORDER BY created_at, id")])

    async def revoke_api_key(self, key_id: str, ts: float) -> bool:
        """Mark a key revoked (in its own transaction)."""

        def write(db: sqlite_utils.Database) -> bool:
            with db.conn:
                cursor = db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                    [ts, key_id])
            return cursor.rowcount > 0

        return await self._submit(write)

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        """Queue one guardrail decision."""
        row = asdict(decision)
        self._put_write(lambda db: db["guardrail_decisions"].insert(row))

    def _put_write(self, fn: Callable[[sqlite_utils.Database], None]) -> None:
        if self._closed:
            logger.warning("write dropped: store already closed")
            return
        self._queue.put(_Write(fn))

    async def count_calls(self) -> int:
        """How many attempt records are stored (for checks and tests)."""
        return await self._submit(lambda db: db["calls"].count)

    async def flush(self) -> None:
        """Wait until every record queued so far is written."""
        await self._submit(lambda db: None)

    def close(self) -> None:
        """Write what is queued, close the connection and join the thread (bounded). Idempotent, blocking."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(_CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            logger.error("store thread did not finish within %.0f s; some call records may be lost", _CLOSE_TIMEOUT_S)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop; shielded so shutdown's cancellation cannot skip it."""
        import anyio

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)


def _workflow(row: Sequence[Any]) -> WorkflowRecord:
    import json

    return WorkflowRecord(row[0], row[1], json.loads(row[2]), row[3] or 0.0, row[4] or 0.0)
