"""SQLite implementations of :class:`~server.store.CallStore` and :class:`~server.store.GuardrailLog`: records
queued to the owning thread (:mod:`server.store.sqlite_db`), figures read back from the ``calls`` table and the
per-minute and per-hour aggregates (:mod:`server.store.sqlite_ops`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from server.store import sqlite_ops as ops_sql
from server.store.records import GROUP_COLUMNS, AggregateRow, CallRecord, CallRow, GroupBy, GroupTotals, GuardrailDecision
from server.store.sqlite_db import SQLiteDatabase

if TYPE_CHECKING:  # imported when the store is first used (server.store.sqlite_db), not at start-up
    import sqlite_utils


class SQLiteCalls:
    """Call records in ``calls``; every record also counts into its minute and hour as it is stored."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def record_call(self, record: CallRecord) -> None:
        """Queue one record; returns at once (a lock-free queue put, no I/O on the caller's thread)."""
        self._db.record(record)

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

        return await self._db.call(query, "call totals")

    async def cost_by_provider(self, since_ts: float) -> dict[str, float]:
        """USD per provider since ``since_ts``."""
        sql = "SELECT provider, SUM(cost_usd) FROM calls WHERE ts >= ? AND cost_usd > 0 GROUP BY provider"
        return await self._db.call(lambda db: {name: cost for name, cost in db.execute(sql, [since_ts])},
                                   "the spend per provider")

    async def call_rows(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[CallRow]:
        """Raw records in ``[since_ts, until_ts)`` (see :meth:`server.store.CallStore.call_rows`)."""
        return await self._db.call(lambda db: ops_sql.call_rows(db, since_ts, until_ts, group_by), "call records")

    async def aggregate_rows(self, since_ts: float, until_ts: float, group_by: GroupBy, period_s: int = 60
                             ) -> list[AggregateRow]:
        """Per-minute or per-hour aggregates per group key."""
        return await self._db.call(lambda db: ops_sql.aggregate_rows(db, since_ts, until_ts, group_by, period_s),
                                   "call aggregates")

    async def roll_up(self, before_ts: float) -> int:
        """Delete raw records older than ``before_ts`` in one transaction; their aggregates stay."""
        return await self._db.call(lambda db: ops_sql.roll_up(db, before_ts), "the roll-up", write=True)

    async def rolled_up_before(self) -> float:
        return await self._db.call(ops_sql.rolled_up_before, "the roll-up mark")

    async def flush(self) -> None:
        """Wait until every write queued so far is committed (or dropped)."""
        await self._db.flush()

    async def count_calls(self) -> int:
        """How many attempt records are stored (for checks and tests)."""
        return await self._db.call(lambda db: db["calls"].count, "the call count")


class SQLiteGuardrails:
    """Guardrail decisions in ``guardrail_decisions``, queued like call records."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        """Queue one decision."""
        row = asdict(decision)
        self._db.enqueue(lambda db: db["guardrail_decisions"].insert(row), "a guardrail decision")

    async def list_guardrail_decisions(self, *, since_ts: float = 0.0, limit: int = 1000) -> list[GuardrailDecision]:
        """Decisions since ``since_ts``, oldest first."""

        def query(db: sqlite_utils.Database) -> list[GuardrailDecision]:
            rows = db.query("SELECT ts, tool, principal, stage, action, rule, detail FROM guardrail_decisions "
                            "WHERE ts >= ? ORDER BY ts, id LIMIT ?", [since_ts, limit])
            return [GuardrailDecision(**row) for row in rows]

        return await self._db.call(query, "guardrail decisions")
