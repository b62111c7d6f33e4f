"""The operations tables of the PostgreSQL store: raw call records, per-minute and per-hour aggregates, roll-ups
and incidents. Functions of a psycopg connection, run on the store's owning thread (:mod:`server.store.postgres`).

Several replicas add to the same aggregate rows: each batch locks the rows it merges into (``SELECT … FOR
UPDATE``, in key order so two batches cannot deadlock), so no replica's figures overwrite another's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from server.operations.histogram import decode, encode
from server.store import Aggregate, AggregateRow, CallRecord, CallRow
from server.store.minutes import PERIODS_S, aggregate, coarsen, group_position

_TABLES = {60: "call_minutes", 3600: "call_hours"}
_KEY_COLUMNS = ("start", "provider", "model", "tool", "ab_bucket", "workflow")
_KEY_MATCH = " AND ".join(f"{c} = %s" for c in _KEY_COLUMNS)
_INSERT_CALL = ("INSERT INTO calls (ts, call_id, tool, provider, model, status, error_class, latency_ms, "
                "input_tokens, output_tokens, cost_usd, attempt, ab_bucket, cached, workflow) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def insert_calls(connection: Any, records: Sequence[CallRecord]) -> None:
    """Insert raw records and add them to their minutes and hours (inside the caller's transaction)."""
    with connection.cursor() as cursor:
        cursor.executemany(_INSERT_CALL, [
            (r.ts, r.call_id, r.tool, r.provider, r.model, r.status, r.error_class, r.latency_ms, r.input_tokens,
             r.output_tokens, r.cost_usd, r.attempt, r.ab_bucket, r.cached, r.workflow) for r in records])
    minutes = aggregate(records, PERIODS_S[0])
    hours = coarsen(minutes, PERIODS_S[1])  # before merging: merging adds the stored figures into `minutes`
    _merge(connection, minutes, PERIODS_S[0])
    _merge(connection, hours, PERIODS_S[1])


def _merge(connection: Any, aggregates: dict[tuple, Aggregate], period_s: int) -> None:
    table = _TABLES[period_s]
    columns = ", ".join(_KEY_COLUMNS)
    for key in sorted(aggregates):
        agg = aggregates[key]
        connection.execute(f"INSERT INTO {table} ({columns}, calls, errors, input_tokens, output_tokens, cost_usd, "
                           "histogram) VALUES (%s, %s, %s, %s, %s, %s, 0, 0, 0, 0, 0, %s) ON CONFLICT DO NOTHING",
                           [*key, encode({})])
        stored = connection.execute(f"SELECT calls, errors, input_tokens, output_tokens, cost_usd, histogram "
                                    f"FROM {table} WHERE {_KEY_MATCH} FOR UPDATE", key).fetchone()
        agg.absorb(_stored(*stored))
        connection.execute(f"UPDATE {table} SET calls = %s, errors = %s, input_tokens = %s, output_tokens = %s, "
                           f"cost_usd = %s, histogram = %s WHERE {_KEY_MATCH}",
                           [agg.calls, agg.errors, agg.input_tokens, agg.output_tokens, agg.cost_usd,
                            encode(agg.histogram), *key])


def _stored(calls: int, errors: int, input_tokens: int, output_tokens: int, cost_usd: float,
            histogram: bytes) -> Aggregate:
    return Aggregate(calls, errors, input_tokens, output_tokens, cost_usd, decode(bytes(histogram)))


def group_totals_rows(connection: Any, since_ts: float, until_ts: float, group_by: str) -> list[tuple]:
    group_position(group_by)  # validates the column name before it reaches SQL
    return connection.execute(
        f"SELECT {group_by}, status, latency_ms, COALESCE(input_tokens, 0), COALESCE(output_tokens, 0), "
        f"COALESCE(cost_usd, 0) FROM calls WHERE ts >= %s AND ts < %s ORDER BY {group_by}, latency_ms",
        [since_ts, until_ts]).fetchall()


def call_rows(connection: Any, since_ts: float, until_ts: float, group_by: str) -> list[CallRow]:
    group_position(group_by)
    return [(key or "", *rest) for key, *rest in connection.execute(
        f"SELECT {group_by}, ts, status, latency_ms, COALESCE(input_tokens, 0), COALESCE(output_tokens, 0), "
        "COALESCE(cost_usd, 0) FROM calls WHERE ts >= %s AND ts < %s", [since_ts, until_ts])]


def aggregate_rows(connection: Any, since_ts: float, until_ts: float, group_by: str,
                   period_s: int = 60) -> list[AggregateRow]:
    group_position(group_by)
    if period_s not in _TABLES:
        raise ValueError(f"no aggregates per {period_s} s (use 60 or 3600)")
    rows: dict[tuple[float, str], AggregateRow] = {}
    for start, key, *figures in connection.execute(
            f"SELECT start, {group_by}, calls, errors, input_tokens, output_tokens, cost_usd, histogram "
            f"FROM {_TABLES[period_s]} WHERE start >= %s AND start < %s", [since_ts, until_ts]):
        stored = _stored(*figures)
        row = rows.get((start, key))
        if row is None:
            rows[(start, key)] = AggregateRow(stored.calls, stored.errors, stored.input_tokens, stored.output_tokens,
                                              stored.cost_usd, stored.histogram, start=start, key=key)
        else:
            row.absorb(stored)
    return list(rows.values())


def cost_by_provider(connection: Any, since_ts: float) -> dict[str, float]:
    """USD per provider since ``since_ts``: from the hourly or per-minute aggregates when ``since_ts`` starts an
    hour or a minute (a day's spend, read before every budgeted call, is then a few dozen rows), else raw."""
    source = next((_TABLES[p] for p in (3600, 60) if since_ts % p == 0), None)
    if source is None:
        sql = "SELECT provider, SUM(cost_usd) FROM calls WHERE ts >= %s AND cost_usd > 0 GROUP BY provider"
    else:
        sql = f"SELECT provider, SUM(cost_usd) FROM {source} WHERE start >= %s AND cost_usd > 0 GROUP BY provider"
    return dict(connection.execute(sql, [since_ts]).fetchall())


def roll_up(connection: Any, before_ts: float) -> int:
    with connection.transaction():
        deleted = connection.execute("DELETE FROM calls WHERE ts < %s", [before_ts]).rowcount
        connection.execute("INSERT INTO rollups (before_ts, deleted, at) VALUES (%s, %s, %s)",
                           [before_ts, deleted, time.time()])
    return deleted


def rolled_up_before(connection: Any) -> float:
    return connection.execute("SELECT COALESCE(MAX(before_ts), 0) FROM rollups").fetchone()[0]


def put_incident(connection: Any, incident: dict[str, Any]) -> None:
    with connection.transaction():
        connection.execute("INSERT INTO incidents (id, opened_at, status, body) VALUES (%s, %s, %s, %s) "
                           "ON CONFLICT (id) DO UPDATE SET opened_at = excluded.opened_at, "
                           "status = excluded.status, body = excluded.body",
                           [incident["id"], incident["opened_at"], incident["status"], json.dumps(incident)])


def get_incident(connection: Any, incident_id: str) -> dict[str, Any] | None:
    row = connection.execute("SELECT body FROM incidents WHERE id = %s", [incident_id]).fetchone()
    return None if row is None else json.loads(row[0])


def list_incidents(connection: Any, active_only: bool, limit: int) -> list[dict[str, Any]]:
    where = "WHERE status != 'resolved' " if active_only else ""
    return [json.loads(body) for (body,) in connection.execute(
        f"SELECT body FROM incidents {where}ORDER BY opened_at DESC, id LIMIT %s", [limit])]
