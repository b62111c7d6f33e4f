"""The PostgreSQL store: every replica of a team deployment reads and writes the same database.

psycopg 3 (the driver DBOS already installs) on one connection owned by one thread, as the SQLite store owns
its connection: fire-and-forget writes (call records, turns, cache entries, guardrail decisions) are queued and
written in batches, one transaction per batch; reads and awaited writes queue behind them, so a read sees every
write this replica queued before it. State that several replicas change at once is guarded in SQL: row locks for
aggregates and conversations, transaction-level advisory locks for new pattern and workflow versions.

A lost connection (the database restarted) is reopened on the next operation; a read that failed on the dead
connection is retried once on the new one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from server.store.location import PostgresDatabase
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
from server.store import postgres_ops as ops_sql
from server.store import postgres_patterns as patterns_sql
from server.store.postgres_locks import Listener, claim_interval, notify
from server.store.postgres_schema import migrate

logger = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = object()
_CLOSE_TIMEOUT_S = 30.0
_BATCH_MAX = 2000


@dataclass(frozen=True, slots=True)
class _Write:
    fn: Callable[[Any], None]


def connect(database: PostgresDatabase, *, autocommit: bool = True, application_name: str = "ai-orchestration-mcp"
            ) -> Any:
    """A psycopg connection with TCP keepalives (a dead peer is noticed within about a minute)."""
    import psycopg

    return psycopg.connect(database.url, autocommit=autocommit, application_name=application_name,
                           keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
                           connect_timeout=10)


class PostgresStore:
    """The team-deployment store (the same interface as :class:`server.store.sqlite.SQLiteStore`).

    Args:
        database: the PostgreSQL database (:class:`server.config.PostgresDatabase`); migrated on open.

    Raises:
        psycopg.Error: the database cannot be reached or migrated (raised from the constructor).
    """

    shared = True
    """Several replicas share this store (budgets and interval jobs consult it; see :mod:`server.app.assembly`)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        opened: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(opened,), name="postgres-store", daemon=True)
        self._thread.start()
        opened.result()

    # -- the owning thread ------------------------------------------------------------------------------

    def _run(self, opened: Future[None]) -> None:
        try:
            connection = connect(self.database)
            migrate(connection)
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            self._serve(connection)
        finally:
            self._connection.close()

    def _serve(self, connection: Any) -> None:
        self._connection = connection
        while True:
            item = self._queue.get()
            batch: list[CallRecord | _Write] = []
            while True:
                if isinstance(item, (CallRecord, _Write)):
                    batch.append(item)
                else:
                    self._write(batch)
                    batch = []
                    if item is _STOP:
                        return
                    self._read(*item)
                if len(batch) >= _BATCH_MAX:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write(batch)

    def _live(self) -> Any:
        if self._connection.closed or self._connection.broken:
            logger.warning("the PostgreSQL connection was lost; reconnecting")
            self._connection = connect(self.database)
        return self._connection

    def _write(self, batch: list[CallRecord | _Write]) -> None:
        if not batch:
            return
        records = [item for item in batch if isinstance(item, CallRecord)]
        try:
            connection = self._live()
            with connection.transaction():
                if records:
                    ops_sql.insert_calls(connection, records)
                for item in batch:
                    if isinstance(item, _Write):
                        item.fn(connection)
        except Exception:
            logger.exception("could not store a batch of %d write(s)", len(batch))

    def _read(self, fn: Callable[[Any], Any], future: Future[Any]) -> None:
        import psycopg

        if not future.set_running_or_notify_cancel():
            return
        for attempt in (1, 2):
            try:
                future.set_result(fn(self._live()))
                return
            except psycopg.OperationalError as exc:
                if attempt == 2 or not self._connection.broken:
                    future.set_exception(exc)
                    return
            except BaseException as exc:
                future.set_exception(exc)
                return

    # -- the async side ---------------------------------------------------------------------------------

    async def _submit(self, fn: Callable[[Any], T]) -> T:
        if self._closed:
            raise RuntimeError("store is closed")
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return await asyncio.wrap_future(future)

    def _put_write(self, fn: Callable[[Any], None]) -> None:
        if self._closed:
            logger.warning("write dropped: store already closed")
            return
        self._queue.put(_Write(fn))

    def record_call(self, record: CallRecord) -> None:
        if self._closed:
            logger.warning("call record dropped: store already closed")
            return
        self._queue.put(record)

    async def group_totals(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[GroupTotals]:
        if group_by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {group_by!r}")
        groups: dict[str, GroupTotals] = {}
        for key, *values in await self._submit(lambda c: ops_sql.group_totals_rows(c, since_ts, until_ts, group_by)):
            key = key or ""
            totals = groups.get(key)
            if totals is None:
                totals = groups[key] = GroupTotals(key=key)
            totals.add(*values)
        return list(groups.values())

    async def cost_by_provider(self, since_ts: float) -> dict[str, float]:
        return await self._submit(lambda c: ops_sql.cost_by_provider(c, since_ts))

    async def load_turns(self, conversation_id: str, *, owner: str | None = None
                         ) -> list[tuple[str, str]] | None:
        def query(c: Any) -> list[tuple[str, str]] | None:
            found = c.execute("SELECT owner FROM conversations WHERE id = %s", [conversation_id]).fetchone()
            if found is None or (owner is not None and found[0] != owner):
                return None
            return [(role, content) for role, content in c.execute(
                "SELECT role, content FROM turns WHERE conversation_id = %s ORDER BY seq", [conversation_id])]

        return await self._submit(query)

    def append_turns(self, conversation_id: str, turns: list[tuple[str, str]], ts: float, *,
                     owner: str | None = None) -> None:
        def write(c: Any) -> None:
            c.execute("INSERT INTO conversations (id, created_at, updated_at, owner) VALUES (%s, %s, %s, %s) "
                      "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at", [conversation_id, ts, ts, owner])
            # The row lock orders two replicas appending to one conversation at once.
            c.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", [conversation_id])
            start = c.execute("SELECT COALESCE(MAX(seq), 0) FROM turns WHERE conversation_id = %s",
                              [conversation_id]).fetchone()[0]
            with c.cursor() as cursor:
                cursor.executemany("INSERT INTO turns (conversation_id, seq, role, content, ts) VALUES (%s, %s, %s, %s, %s)",
                                   [(conversation_id, start + i, role, content, ts)
                                    for i, (role, content) in enumerate(turns, 1)])

        self._put_write(write)

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        def query(c: Any) -> dict[str, Any] | None:
            row = c.execute("SELECT key, ts, provider, model, text, input_tokens, output_tokens FROM response_cache "
                            "WHERE key = %s AND ts >= %s", [key, since_ts]).fetchone()
            names = ("key", "ts", "provider", "model", "text", "input_tokens", "output_tokens")
            return None if row is None else dict(zip(names, row, strict=True))

        return await self._submit(query)

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        row = {"key": key, "ts": ts, **{k: entry.get(k) for k in ("provider", "model", "text", "input_tokens",
                                                                  "output_tokens")}}
        self._put_write(lambda c: c.execute(
            "INSERT INTO response_cache (key, ts, provider, model, text, input_tokens, output_tokens) VALUES "
            "(%(key)s, %(ts)s, %(provider)s, %(model)s, %(text)s, %(input_tokens)s, %(output_tokens)s) "
            "ON CONFLICT (key) DO UPDATE SET ts = excluded.ts, provider = excluded.provider, model = excluded.model, "
            "text = excluded.text, input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens", row))

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        return await self._submit(lambda c: patterns_sql.put(c, record, keep_registered))

    async def get_pattern(self, name: str, version: int | None = None) -> PatternRecord | None:
        return await self._submit(lambda c: patterns_sql.get(c, name, version))

    async def pattern_versions(self, name: str) -> list[int]:
        return await self._submit(lambda c: patterns_sql.versions(c, name))

    async def list_patterns(self) -> list[PatternRecord]:
        return await self._submit(patterns_sql.current_all)

    async def search_patterns(self, terms: Sequence[str], tags: Sequence[str], limit: int
                              ) -> list[tuple[PatternRecord, float]]:
        return await self._submit(lambda c: patterns_sql.search(c, list(terms), list(tags), limit))

    async def pattern_names(self, prefix: str, limit: int) -> list[str]:
        return await self._submit(lambda c: patterns_sql.names(c, prefix, limit))

    async def put_workflow(self, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
        return await self._submit(lambda c: patterns_sql.put_workflow(c, name, definition, ts))

    async def get_workflow(self, name: str) -> WorkflowRecord | None:
        found = await self._submit(lambda c: patterns_sql.workflows(c, name))
        return found[0] if found else None

    async def list_workflows(self) -> list[WorkflowRecord]:
        return await self._submit(patterns_sql.workflows)

    async def call_rows(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[CallRow]:
        return await self._submit(lambda c: ops_sql.call_rows(c, since_ts, until_ts, group_by))

    async def aggregate_rows(self, since_ts: float, until_ts: float, group_by: GroupBy, period_s: int = 60
                             ) -> list[AggregateRow]:
        return await self._submit(lambda c: ops_sql.aggregate_rows(c, since_ts, until_ts, group_by, period_s))

    async def roll_up(self, before_ts: float) -> int:
        return await self._submit(lambda c: ops_sql.roll_up(c, before_ts))

    async def rolled_up_before(self) -> float:
        return await self._submit(ops_sql.rolled_up_before)

    async def put_incident(self, incident: dict[str, Any]) -> None:
        await self._submit(lambda c: ops_sql.put_incident(c, incident))

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        return await self._submit(lambda c: ops_sql.get_incident(c, incident_id))

    async def list_incidents(self, *, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        return await self._submit(lambda c: ops_sql.list_incidents(c, active_only, limit))

    async def put_api_key(self, record: ApiKeyRecord) -> None:
        row = asdict(record)
        await self._submit(lambda c: c.execute(
            f"INSERT INTO api_keys ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values())))

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        found = await self._submit(lambda c: _keys(c, "WHERE key_hash = %s", [key_hash]))
        return found[0] if found else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        return await self._submit(lambda c: _keys(c, "ORDER BY created_at, id", []))

    async def revoke_api_key(self, key_id: str, ts: float) -> bool:
        return await self._submit(lambda c: c.execute(
            "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL", [ts, key_id]).rowcount > 0)

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        row = asdict(decision)
        self._put_write(lambda c: c.execute(
            f"INSERT INTO guardrail_decisions ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
            list(row.values())))

    # -- coordination across replicas (server.store.postgres_locks) ---------------------------------------

    async def claim_interval(self, job: str, interval_s: float, now: float) -> bool:
        """Whether this replica runs ``job`` in the interval slot ``now`` falls in: true for exactly one replica
        per slot (:func:`server.store.postgres_locks.claim_interval`)."""
        return await self._submit(lambda c: claim_interval(c, job, interval_s, now))

    async def shared_key(self, name: str) -> bytes:
        """A 256-bit random key every replica reads alike: made (and stored) by the first replica that asks."""
        import os
        import time

        candidate = os.urandom(32)

        def read(c: Any) -> bytes:
            c.execute("INSERT INTO shared_keys (name, key, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                      [name, candidate, time.time()])
            return bytes(c.execute("SELECT key FROM shared_keys WHERE name = %s", [name]).fetchone()[0])

        return await self._submit(read)

    def notify(self, channel: str, payload: str) -> None:
        """Queue a NOTIFY (sent when its batch commits, after the writes queued before it)."""
        self._put_write(lambda c: notify(c, channel, payload))

    def listen(self, channel: str, on_message: Callable[[str], None]) -> Listener:
        """LISTEN on ``channel`` (a connection and thread of its own); close the returned listener to stop."""
        return Listener(self.database, channel, on_message)

    async def count_calls(self) -> int:
        return await self._submit(lambda c: c.execute("SELECT count(*) FROM calls").fetchone()[0])

    async def flush(self) -> None:
        await self._submit(lambda c: None)

    def close(self) -> None:
        """Write what is queued, close the connection and join the thread (bounded). Idempotent, blocking."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(_CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            logger.error("store thread did not finish within %.0f s; some writes may be lost", _CLOSE_TIMEOUT_S)

    async def aclose(self) -> None:
        import anyio

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)


def _keys(connection: Any, where: str, params: list[Any]) -> list[ApiKeyRecord]:
    columns = ("id", "name", "role", "key_hash", "prefix", "created_at", "expires_at", "revoked_at")
    return [ApiKeyRecord(**dict(zip(columns, row, strict=True)))
            for row in connection.execute(f"SELECT {', '.join(columns)} FROM api_keys {where}", params)]
