"""SQLite implementations of the protocols for the server's own state: saved workflows, run records, incidents and
API keys. Every write here is a call in its own transaction, committed before it returns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from server.store import sqlite_ops as ops_sql
from server.store.records import (
    FINISHED,
    AgentRecord,
    AgentSource,
    ApiKeyRecord,
    RunState,
    WorkflowRecord,
    WorkflowRun,
    next_agent_version,
)
from server.store.sqlite_db import SQLiteDatabase

if TYPE_CHECKING:  # imported when the store is first used (server.store.sqlite_db), not at start-up
    import sqlite_utils


class SQLiteWorkflows:
    """Saved workflow definitions in ``workflows`` (the current version of each)."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def put_workflow(self, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
        """Save a workflow definition in one transaction (a new version when it changed)."""
        text = json.dumps(definition, ensure_ascii=False, sort_keys=True)

        def put(db: sqlite_utils.Database) -> tuple[WorkflowRecord, bool]:
            with db.atomic():
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

        return await self._db.call(put, f"workflow {name!r}", write=True)

    async def get_workflow(self, name: str) -> WorkflowRecord | None:
        """The saved workflow ``name``, or ``None``."""
        rows = await self._db.call(lambda db: list(db.execute(
            "SELECT name, version, definition, created_at, updated_at FROM workflows WHERE name = ?", [name])),
            f"workflow {name!r}")
        return _workflow(rows[0]) if rows else None

    async def list_workflows(self) -> list[WorkflowRecord]:
        """Every saved workflow, by name."""
        rows = await self._db.call(lambda db: list(db.execute(
            "SELECT name, version, definition, created_at, updated_at FROM workflows ORDER BY name")),
            "the saved workflows")
        return [_workflow(row) for row in rows]


def _workflow(row: Sequence[Any]) -> WorkflowRecord:
    return WorkflowRecord(row[0], row[1], json.loads(row[2]), row[3] or 0.0, row[4] or 0.0)


class SQLiteAgents:
    """Agents in ``agents`` (the current version of each) and ``agent_versions`` (every version)."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def put_agent(self, name: str, spec: dict[str, Any], ts: float, *,
                        source: AgentSource = "registered") -> tuple[AgentRecord, bool]:
        """Store the next version in one transaction (nothing when spec and source are the current one's)."""
        text = json.dumps(spec, ensure_ascii=False, sort_keys=True)

        def put(db: sqlite_utils.Database) -> tuple[AgentRecord, bool]:
            with db.atomic():
                row = db.execute(f"{_SELECT_AGENT} agents WHERE name = ?", [name]).fetchone()
                current = _agent(row) if row is not None else None
                record = next_agent_version(current, name, json.loads(text), ts, source)
                if record is None:
                    return current, False
                values = [name, record.version, text, record.created_at, ts, source]
                db.execute(f"INSERT INTO agent_versions ({_AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", values)
                db.execute(f"INSERT INTO agents ({_AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                           "ON CONFLICT(name) DO UPDATE SET version = excluded.version, spec = excluded.spec, "
                           "updated_at = excluded.updated_at, source = excluded.source", values)
            return record, True

        return await self._db.call(put, f"agent {name!r}", write=True)

    async def get_agent(self, name: str, version: int | None = None) -> AgentRecord | None:
        sql, params = ("agents WHERE name = ?", [name]) if version is None else (
            "agent_versions WHERE name = ? AND version = ?", [name, version])
        rows = await self._db.call(lambda db: list(db.execute(f"{_SELECT_AGENT} {sql}", params)), f"agent {name!r}")
        return _agent(rows[0]) if rows else None

    async def list_agents(self) -> list[AgentRecord]:
        rows = await self._db.call(lambda db: list(db.execute(f"{_SELECT_AGENT} agents ORDER BY name")), "the agents")
        return [_agent(row) for row in rows]


_AGENT_COLUMNS = "name, version, spec, created_at, updated_at, source"
_SELECT_AGENT = f"SELECT {_AGENT_COLUMNS} FROM"


def _agent(row: Sequence[Any]) -> AgentRecord:
    return AgentRecord(row[0], row[1], json.loads(row[2]), row[3] or 0.0, row[4] or 0.0, row[5])


_RUN_COLUMNS = tuple(f.name for f in fields(WorkflowRun))
_SELECT_RUN = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"


class SQLiteRuns:
    """Run records in ``runs`` (migration ``008_runs``), indexed for listing by owner and by status."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def create_run(self, run: WorkflowRun) -> tuple[WorkflowRun, bool]:
        """Insert unless the id exists (``INSERT … ON CONFLICT DO NOTHING``); committed on return."""
        row = asdict(run)
        if not row["updated_at"]:
            row["updated_at"] = run.created_at

        def insert(db: sqlite_utils.Database) -> tuple[WorkflowRun, bool]:
            with db.atomic():
                created = db.execute(
                    f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) "
                    "ON CONFLICT(run_id) DO NOTHING", list(row.values())).rowcount == 1
                stored = db.execute(f"{_SELECT_RUN} WHERE run_id = ?", [run.run_id]).fetchone()
            return WorkflowRun(*stored), created

        return await self._db.call(insert, f"run {run.run_id}", write=True)

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        """The run record, or ``None``."""
        row = await self._db.call(lambda db: db.execute(f"{_SELECT_RUN} WHERE run_id = ?", [run_id]).fetchone(),
                                  f"run {run_id}")
        return None if row is None else WorkflowRun(*row)

    async def list_runs(self, *, owner: str | None = None, status: Sequence[RunState] = (), limit: int = 50,
                        offset: int = 0) -> list[WorkflowRun]:
        """Newest first; the owner and status filters use the indexes on (owner, created_at) and
        (status, created_at)."""
        where, params = [], []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if status:
            where.append(f"status IN ({', '.join('?' * len(status))})")
            params.extend(status)
        sql = (f"{_SELECT_RUN}{' WHERE ' + ' AND '.join(where) if where else ''} "
               "ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?")
        rows = await self._db.call(lambda db: db.execute(sql, [*params, limit, offset]).fetchall(), "the runs")
        return [WorkflowRun(*row) for row in rows]

    async def set_run_status(self, run_id: str, status: RunState, ts: float, *, error: str | None = None,
                             if_unfinished: bool = True) -> bool:
        """One ``UPDATE`` in its own transaction."""
        guard = f" AND status NOT IN ({', '.join('?' * len(FINISHED))})" if if_unfinished else ""

        def update(db: sqlite_utils.Database) -> bool:
            with db.atomic():
                cursor = db.execute(f"UPDATE runs SET status = ?, updated_at = ?, error = ? WHERE run_id = ?{guard}",
                                    [status, ts, error, run_id, *(FINISHED if if_unfinished else ())])
            return cursor.rowcount > 0

        return await self._db.call(update, f"the status of run {run_id}", write=True)


class SQLiteIncidents:
    """Incidents in ``incidents`` (the JSON body, with the columns listings sort and filter on)."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def put_incident(self, incident: dict[str, Any]) -> None:
        await self._db.call(lambda db: ops_sql.put_incident(db, incident), f"incident {incident.get('id')}",
                            write=True)

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        return await self._db.call(lambda db: ops_sql.get_incident(db, incident_id), f"incident {incident_id}")

    async def list_incidents(self, *, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        return await self._db.call(lambda db: ops_sql.list_incidents(db, active_only, limit), "the incidents")


class SQLiteKeys:
    """API key records in ``api_keys`` (unique on ``key_hash``)."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def put_api_key(self, record: ApiKeyRecord) -> None:
        """Insert a key record in its own transaction."""

        def write(db: sqlite_utils.Database) -> None:
            with db.atomic():
                db["api_keys"].insert(asdict(record))

        await self._db.call(write, f"API key {record.id}", write=True)

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key record with this hash (an indexed lookup), or ``None``."""

        def query(db: sqlite_utils.Database) -> ApiKeyRecord | None:
            rows = list(db.query("SELECT * FROM api_keys WHERE key_hash = ?", [key_hash]))
            return ApiKeyRecord(**rows[0]) if rows else None

        return await self._db.call(query, "the API key")

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key record, oldest first."""
        return await self._db.call(lambda db: [ApiKeyRecord(**row) for row in
                                               db.query("SELECT * FROM api_keys ORDER BY created_at, id")],
                                   "the API keys")

    async def revoke_api_key(self, key_id: str, ts: float) -> bool:
        """Mark a key revoked (in its own transaction)."""

        def write(db: sqlite_utils.Database) -> bool:
            with db.atomic():
                cursor = db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                    [ts, key_id])
            return cursor.rowcount > 0

        return await self._db.call(write, f"the revocation of API key {key_id}", write=True)
