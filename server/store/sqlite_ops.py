"""The operations tables of the SQLite store: per-minute aggregates, roll-ups and incidents.

Functions here run on the store's owning thread (see :mod:`server.store.sqlite`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from server.operations.histogram import decode, encode
from server.store import Aggregate, AggregateRow, CallRecord, CallRow
from server.store.minutes import PERIODS_S, aggregate, coarsen, group_position

if TYPE_CHECKING:  # imported when the store is first used (server.store.sqlite_db), not at start-up
    import sqlite_utils

_TABLES = {60: "call_minutes", 3600: "call_hours"}
_KEY_COLUMNS = ("start", "provider", "model", "tool", "ab_bucket", "workflow")
_INSERT_CALL = ("INSERT INTO calls (ts, call_id, tool, provider, model, status, error_class, latency_ms, "
                "input_tokens, output_tokens, cost_usd, attempt, ab_bucket, cached, workflow) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def insert_calls(db: sqlite_utils.Database, records: Sequence[CallRecord]) -> None:
    """Insert raw records and add them to their minutes and hours (inside the caller's transaction)."""
    db.conn.executemany(_INSERT_CALL, [
        (r.ts, r.call_id, r.tool, r.provider, r.model, r.status, r.error_class, r.latency_ms, r.input_tokens,
         r.output_tokens, r.cost_usd, r.attempt, r.ab_bucket, int(r.cached), r.workflow) for r in records])
    _add_all_periods(db, records)


def _add_all_periods(db: sqlite_utils.Database, records: Sequence[CallRecord]) -> None:
    minutes = aggregate(records, PERIODS_S[0])
    hours = coarsen(minutes, PERIODS_S[1])
    add_aggregates(db, minutes, PERIODS_S[0])
    add_aggregates(db, hours, PERIODS_S[1])


def add_aggregates(db: sqlite_utils.Database, aggregates: dict[tuple, Aggregate], period_s: int) -> None:
    """Merge ``aggregates`` into the period's table (read, add, write back)."""
    table = _TABLES[period_s]
    select = (f"SELECT calls, errors, input_tokens, output_tokens, cost_usd, histogram FROM {table} WHERE "
              + " AND ".join(f"{c} = ?" for c in _KEY_COLUMNS))
    upsert = (f"INSERT OR REPLACE INTO {table} ({', '.join(_KEY_COLUMNS)}, calls, errors, input_tokens, "
              "output_tokens, cost_usd, histogram) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    rows = []
    for key, agg in aggregates.items():
        existing = db.conn.execute(select, key).fetchone()
        if existing is not None:
            agg.absorb(_stored(*existing))
        rows.append((*key, agg.calls, agg.errors, agg.input_tokens, agg.output_tokens, agg.cost_usd,
                     encode(agg.histogram)))
    db.conn.executemany(upsert, rows)


def backfill_aggregates(db: sqlite_utils.Database) -> None:
    """Aggregate every existing raw record (migration 006)."""
    columns = "ts, call_id, tool, provider, model, status, latency_ms, error_class, input_tokens, output_tokens, " \
              "cost_usd, attempt, ab_bucket, cached"
    records = [CallRecord(*row[:7], error_class=row[7], input_tokens=row[8] or 0, output_tokens=row[9] or 0,
                          cost_usd=row[10] or 0.0, attempt=row[11] or 1, ab_bucket=row[12], cached=bool(row[13]))
               for row in db.execute(f"SELECT {columns} FROM calls")]
    if records:
        _add_all_periods(db, records)


def call_rows(db: sqlite_utils.Database, since_ts: float, until_ts: float, group_by: str) -> list[CallRow]:
    group_position(group_by)  # validates the column name before it reaches SQL
    return [(key or "", *rest) for key, *rest in db.execute(
        f"SELECT {group_by}, ts, status, latency_ms, COALESCE(input_tokens, 0), COALESCE(output_tokens, 0), "
        "COALESCE(cost_usd, 0) FROM calls WHERE ts >= ? AND ts < ?", [since_ts, until_ts])]


def aggregate_rows(db: sqlite_utils.Database, since_ts: float, until_ts: float, group_by: str,
                   period_s: int = 60) -> list[AggregateRow]:
    group_position(group_by)
    if period_s not in _TABLES:
        raise ValueError(f"no aggregates per {period_s} s (use 60 or 3600)")
    rows: dict[tuple[float, str], AggregateRow] = {}
    for start, key, *figures in db.execute(
            f"SELECT start, {group_by}, calls, errors, input_tokens, output_tokens, cost_usd, histogram "
            f"FROM {_TABLES[period_s]} WHERE start >= ? AND start < ?", [since_ts, until_ts]):
        stored = _stored(*figures)
        row = rows.get((start, key))
        if row is None:
            rows[(start, key)] = AggregateRow(stored.calls, stored.errors, stored.input_tokens, stored.output_tokens,
                                              stored.cost_usd, stored.histogram, start=start, key=key)
        else:
            row.absorb(stored)
    return list(rows.values())


def _stored(calls: int, errors: int, input_tokens: int, output_tokens: int, cost_usd: float,
            histogram: bytes) -> Aggregate:
    return Aggregate(calls, errors, input_tokens, output_tokens, cost_usd, decode(histogram))


def roll_up(db: sqlite_utils.Database, before_ts: float) -> int:
    with db.atomic():
        deleted = db.conn.execute("DELETE FROM calls WHERE ts < ?", [before_ts]).rowcount
        db.conn.execute("INSERT INTO rollups (before_ts, deleted, at) VALUES (?, ?, ?)",
                        [before_ts, deleted, time.time()])
    return deleted


def rolled_up_before(db: sqlite_utils.Database) -> float:
    return db.execute("SELECT COALESCE(MAX(before_ts), 0) FROM rollups").fetchone()[0]


def put_incident(db: sqlite_utils.Database, incident: dict[str, Any]) -> None:
    with db.atomic():
        db.conn.execute("INSERT OR REPLACE INTO incidents (id, opened_at, status, body) VALUES (?, ?, ?, ?)",
                        [incident["id"], incident["opened_at"], incident["status"], json.dumps(incident)])


def get_incident(db: sqlite_utils.Database, incident_id: str) -> dict[str, Any] | None:
    row = db.execute("SELECT body FROM incidents WHERE id = ?", [incident_id]).fetchone()
    return None if row is None else json.loads(row[0])


def list_incidents(db: sqlite_utils.Database, active_only: bool, limit: int) -> list[dict[str, Any]]:
    where = "WHERE status != 'resolved' " if active_only else ""
    return [json.loads(body) for (body,) in db.execute(
        f"SELECT body FROM incidents {where}ORDER BY opened_at DESC, id LIMIT ?", [limit])]
