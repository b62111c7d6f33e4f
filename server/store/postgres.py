"""The PostgreSQL store: every store protocol over one database that all replicas of a team deployment share.

:class:`PostgresStore` bundles the per-concern implementations below over one
:class:`~server.store.postgres_db.PostgresWorker` (one connection, one thread, the SQLite store's queue
discipline). State that several replicas change at once is guarded in SQL: row locks for aggregates and
conversations, transaction-level advisory locks for new pattern and workflow versions, ``ON CONFLICT`` for
run ids and keys. Beyond the protocols, the bundle offers what replicas coordinate with
(:mod:`server.store.postgres_locks`): once-per-interval job claims, NOTIFY/LISTEN, and keys they share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from typing import Any

from server.store import postgres_ops as ops_sql
from server.store import postgres_patterns as patterns_sql
from server.store.location import PostgresDatabase
from server.store.postgres_audit import PostgresAudit
from server.store.postgres_db import PostgresWorker
from server.store.postgres_locks import Listener, claim_interval, notify
from server.store.records import (
    FINISHED,
    GROUP_COLUMNS,
    AgentRecord,
    AgentSource,
    AggregateRow,
    ApiKeyRecord,
    CallRecord,
    CallRow,
    GroupBy,
    GroupTotals,
    GuardrailDecision,
    PatternRecord,
    RunState,
    WorkflowRecord,
    WorkflowRun,
)


def _insert(table: str, row: dict[str, Any]) -> tuple[str, list[Any]]:
    return f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values())


class _Part:
    def __init__(self, db: PostgresWorker) -> None:
        self._db = db


class PostgresCalls(_Part):
    """Call records in ``calls``, counted into the shared per-minute and per-hour aggregates as they are stored."""

    def record_call(self, record: CallRecord) -> None:
        self._db.record(record)

    async def group_totals(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[GroupTotals]:
        if group_by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {group_by!r}")
        rows = await self._db.call(lambda c: ops_sql.group_totals_rows(c, since_ts, until_ts, group_by),
                                   "call totals")
        groups: dict[str, GroupTotals] = {}
        for key, *values in rows:
            groups.setdefault(key or "", GroupTotals(key=key or "")).add(*values)
        return list(groups.values())

    async def cost_by_provider(self, since_ts: float) -> dict[str, float]:
        return await self._db.call(lambda c: ops_sql.cost_by_provider(c, since_ts), "the spend per provider")

    async def call_rows(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[CallRow]:
        return await self._db.call(lambda c: ops_sql.call_rows(c, since_ts, until_ts, group_by), "call records")

    async def aggregate_rows(self, since_ts: float, until_ts: float, group_by: GroupBy, period_s: int = 60
                             ) -> list[AggregateRow]:
        return await self._db.call(lambda c: ops_sql.aggregate_rows(c, since_ts, until_ts, group_by, period_s),
                                   "call aggregates")

    async def roll_up(self, before_ts: float) -> int:
        return await self._db.call(lambda c: ops_sql.roll_up(c, before_ts), "the roll-up", write=True)

    async def rolled_up_before(self) -> float:
        return await self._db.call(ops_sql.rolled_up_before, "the roll-up mark")

    async def flush(self) -> None:
        await self._db.flush()

    async def count_calls(self) -> int:
        return await self._db.call(lambda c: c.execute("SELECT count(*) FROM calls").fetchone()[0], "the call count")


class PostgresGuardrails(_Part):
    """Guardrail decisions, queued like call records."""

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        sql, params = _insert("guardrail_decisions", asdict(decision))
        self._db.enqueue(lambda c: c.execute(sql, params), "a guardrail decision")

    async def list_guardrail_decisions(self, *, since_ts: float = 0.0, limit: int = 1000) -> list[GuardrailDecision]:
        rows = await self._db.call(lambda c: c.execute(
            "SELECT ts, tool, principal, stage, action, rule, detail FROM guardrail_decisions WHERE ts >= %s "
            "ORDER BY ts, id LIMIT %s", [since_ts, limit]).fetchall(), "guardrail decisions")
        return [GuardrailDecision(*row) for row in rows]


class PostgresConversations(_Part):
    """Turns are awaited writes; two replicas appending to one conversation are ordered by a row lock on it."""

    async def load_turns(self, conversation_id: str, *, owner: str | None = None
                         ) -> list[tuple[str, str]] | None:
        def query(c: Any) -> list[tuple[str, str]] | None:
            found = c.execute("SELECT owner FROM conversations WHERE id = %s", [conversation_id]).fetchone()
            if found is None or (owner is not None and found[0] != owner):
                return None
            return [(role, content) for role, content in c.execute(
                "SELECT role, content FROM turns WHERE conversation_id = %s ORDER BY seq", [conversation_id])]

        return await self._db.call(query, "the conversation")

    async def append_turns(self, conversation_id: str, turns: Sequence[tuple[str, str]], ts: float, *,
                           owner: str | None = None) -> None:
        rows = list(turns)

        def write(c: Any) -> None:
            c.execute("INSERT INTO conversations (id, created_at, updated_at, owner) VALUES (%s, %s, %s, %s) "
                      "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at", [conversation_id, ts, ts, owner])
            c.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", [conversation_id])
            start = c.execute("SELECT COALESCE(MAX(seq), 0) FROM turns WHERE conversation_id = %s",
                              [conversation_id]).fetchone()[0]
            with c.cursor() as cursor:
                cursor.executemany("INSERT INTO turns (conversation_id, seq, role, content, ts) "
                                   "VALUES (%s, %s, %s, %s, %s)",
                                   [(conversation_id, start + i, role, content, ts)
                                    for i, (role, content) in enumerate(rows, 1)])

        await self._db.write(write, "the conversation turns")


class PostgresCache(_Part):
    """Cache entries are queued writes."""

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        names = ("provider", "model", "text", "input_tokens", "output_tokens")
        row = await self._db.call(lambda c: c.execute(
            f"SELECT {', '.join(names)} FROM response_cache WHERE key = %s AND ts >= %s", [key, since_ts]).fetchone(),
            "the response cache")
        return None if row is None else dict(zip(names, row, strict=True))

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        row = {"key": key, "ts": ts, **{k: entry.get(k) for k in ("provider", "model", "text", "input_tokens",
                                                                  "output_tokens")}}
        sql, params = _insert("response_cache", row)
        updates = ", ".join(f"{k} = excluded.{k}" for k in row if k != "key")
        self._db.enqueue(lambda c: c.execute(f"{sql} ON CONFLICT (key) DO UPDATE SET {updates}", params),
                         "a cache entry")


class PostgresPatterns(_Part):
    """Patterns and every version (:mod:`server.store.postgres_patterns`)."""

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        return await self._db.call(lambda c: patterns_sql.put(c, record, keep_registered),
                                   f"pattern {record.name!r}", write=True)

    async def get_pattern(self, name: str, version: int | None = None) -> PatternRecord | None:
        return await self._db.call(lambda c: patterns_sql.get(c, name, version), f"pattern {name!r}")

    async def pattern_versions(self, name: str) -> list[int]:
        return await self._db.call(lambda c: patterns_sql.versions(c, name), f"the versions of pattern {name!r}")

    async def list_patterns(self) -> list[PatternRecord]:
        return await self._db.call(patterns_sql.current_all, "the patterns")

    async def search_patterns(self, terms: Sequence[str], tags: Sequence[str], limit: int
                              ) -> list[tuple[PatternRecord, float]]:
        return await self._db.call(lambda c: patterns_sql.search(c, list(terms), list(tags), limit),
                                   "the pattern search")

    async def pattern_names(self, prefix: str, limit: int) -> list[str]:
        return await self._db.call(lambda c: patterns_sql.names(c, prefix, limit), "the pattern names")


class PostgresWorkflows(_Part):
    """Saved workflow definitions."""

    async def put_workflow(self, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
        return await self._db.call(lambda c: patterns_sql.put_workflow(c, name, definition, ts),
                                   f"workflow {name!r}", write=True)

    async def get_workflow(self, name: str) -> WorkflowRecord | None:
        found = await self._db.call(lambda c: patterns_sql.workflows(c, name), f"workflow {name!r}")
        return found[0] if found else None

    async def list_workflows(self) -> list[WorkflowRecord]:
        return await self._db.call(patterns_sql.workflows, "the saved workflows")


class PostgresAgents(_Part):
    """Agents and every version (:mod:`server.store.postgres_patterns`)."""

    async def put_agent(self, name: str, spec: dict[str, Any], ts: float, *,
                        source: AgentSource = "registered") -> tuple[AgentRecord, bool]:
        return await self._db.call(lambda c: patterns_sql.put_agent(c, name, spec, ts, source), f"agent {name!r}",
                                   write=True)

    async def get_agent(self, name: str, version: int | None = None) -> AgentRecord | None:
        found = await self._db.call(lambda c: patterns_sql.agents(c, name, version), f"agent {name!r}")
        return found[0] if found else None

    async def list_agents(self) -> list[AgentRecord]:
        return await self._db.call(patterns_sql.agents, "the agents")


_RUN_COLUMNS = tuple(f.name for f in fields(WorkflowRun))
_SELECT_RUN = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"


class PostgresRuns(_Part):
    """Run records; of two replicas creating one run id at once, ``ON CONFLICT DO NOTHING`` lets one win."""

    async def create_run(self, run: WorkflowRun) -> tuple[WorkflowRun, bool]:
        row = asdict(run)
        row["updated_at"] = row["updated_at"] or run.created_at
        sql, params = _insert("runs", row)

        def insert(c: Any) -> tuple[WorkflowRun, bool]:
            with c.transaction():
                created = c.execute(f"{sql} ON CONFLICT (run_id) DO NOTHING", params).rowcount == 1
                stored = c.execute(f"{_SELECT_RUN} WHERE run_id = %s", [run.run_id]).fetchone()
            return WorkflowRun(*stored), created

        return await self._db.call(insert, f"run {run.run_id}", write=True)

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        row = await self._db.call(lambda c: c.execute(f"{_SELECT_RUN} WHERE run_id = %s", [run_id]).fetchone(),
                                  f"run {run_id}")
        return None if row is None else WorkflowRun(*row)

    async def list_runs(self, *, owner: str | None = None, status: Sequence[RunState] = (), limit: int = 50,
                        offset: int = 0) -> list[WorkflowRun]:
        where, params = [], []
        if owner is not None:
            where.append("owner = %s")
            params.append(owner)
        if status:
            where.append("status = ANY(%s)")
            params.append(list(status))
        sql = (f"{_SELECT_RUN}{' WHERE ' + ' AND '.join(where) if where else ''} "
               "ORDER BY created_at DESC, run_id DESC LIMIT %s OFFSET %s")
        rows = await self._db.call(lambda c: c.execute(sql, [*params, limit, offset]).fetchall(), "the runs")
        return [WorkflowRun(*row) for row in rows]

    async def set_run_status(self, run_id: str, status: RunState, ts: float, *, error: str | None = None,
                             if_unfinished: bool = True) -> bool:
        guard = " AND NOT (status = ANY(%s))" if if_unfinished else ""
        params: list[Any] = [status, ts, error, run_id] + ([list(FINISHED)] if if_unfinished else [])
        return await self._db.call(lambda c: c.execute(
            f"UPDATE runs SET status = %s, updated_at = %s, error = %s WHERE run_id = %s{guard}", params).rowcount > 0,
            f"the status of run {run_id}", write=True)


class PostgresIncidents(_Part):
    """Incidents (the JSON body, with the columns listings sort and filter on)."""

    async def put_incident(self, incident: dict[str, Any]) -> None:
        await self._db.call(lambda c: ops_sql.put_incident(c, incident), f"incident {incident.get('id')}", write=True)

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        return await self._db.call(lambda c: ops_sql.get_incident(c, incident_id), f"incident {incident_id}")

    async def list_incidents(self, *, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        return await self._db.call(lambda c: ops_sql.list_incidents(c, active_only, limit), "the incidents")


_KEY_COLUMNS = tuple(f.name for f in fields(ApiKeyRecord))


class PostgresKeys(_Part):
    """API key records (unique on the hash)."""

    async def put_api_key(self, record: ApiKeyRecord) -> None:
        sql, params = _insert("api_keys", asdict(record))
        await self._db.call(lambda c: c.execute(sql, params), f"API key {record.id}", write=True)

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        found = await self._db.call(lambda c: self._keys(c, "WHERE key_hash = %s", [key_hash]), "the API key")
        return found[0] if found else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        return await self._db.call(lambda c: self._keys(c, "ORDER BY created_at, id", []), "the API keys")

    async def revoke_api_key(self, key_id: str, ts: float) -> bool:
        return await self._db.call(lambda c: c.execute(
            "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL", [ts, key_id]).rowcount > 0,
            f"the revocation of API key {key_id}", write=True)

    @staticmethod
    def _keys(c: Any, where: str, params: list[Any]) -> list[ApiKeyRecord]:
        return [ApiKeyRecord(*row) for row in c.execute(f"SELECT {', '.join(_KEY_COLUMNS)} FROM api_keys {where}",
                                                         params)]


class PostgresStore:
    """:class:`~server.store.Store` on a PostgreSQL database that replicas share.

    Args:
        database: the database (:class:`server.store.location.PostgresDatabase`); migrated on open.

    Raises:
        StoreUnavailable: the database cannot be reached or migrated (named without its password).
    """

    shared = True
    """Several replicas share this store: budgets read everyone's spend, interval jobs claim their slot here."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.location = database
        self.database = PostgresWorker(database)
        self.calls = PostgresCalls(self.database)
        self.guardrails = PostgresGuardrails(self.database)
        self.conversations = PostgresConversations(self.database)
        self.cache = PostgresCache(self.database)
        self.patterns = PostgresPatterns(self.database)
        self.workflows = PostgresWorkflows(self.database)
        self.runs = PostgresRuns(self.database)
        self.incidents = PostgresIncidents(self.database)
        self.keys = PostgresKeys(self.database)
        self.audit = PostgresAudit(self.database)
        self.agents = PostgresAgents(self.database)

    # -- coordination across replicas (server.store.postgres_locks) -------------------------------------

    async def claim_interval(self, job: str, interval_s: float, now: float) -> bool:
        """Whether this replica runs ``job`` in the interval slot ``now`` falls in: true for exactly one replica
        per slot (:func:`server.store.postgres_locks.claim_interval`)."""
        return await self.database.call(lambda c: claim_interval(c, job, interval_s, now), f"the {job} slot",
                                        write=True)

    def notify(self, channel: str, payload: str) -> None:
        """Queue a NOTIFY (sent when its batch commits, after the writes queued before it)."""
        self.database.enqueue(lambda c: notify(c, channel, payload), "a notification")

    def listen(self, channel: str, on_message: Callable[[str], None]) -> Listener:
        """LISTEN on ``channel`` (a connection and thread of its own); close the returned listener to stop."""
        return Listener(self.location, channel, on_message)

    async def shared_key(self, name: str) -> bytes:
        """A 256-bit random key every replica reads alike: made (and stored) by the first replica that asks."""
        candidate = os.urandom(32)

        def read(c: Any) -> bytes:
            c.execute("INSERT INTO shared_keys (name, key, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                      [name, candidate, time.time()])
            return bytes(c.execute("SELECT key FROM shared_keys WHERE name = %s", [name]).fetchone()[0])

        return await self.database.call(read, f"the shared key {name!r}", write=True)

    def close(self) -> None:
        self.database.close()

    async def aclose(self) -> None:
        await self.database.aclose()
