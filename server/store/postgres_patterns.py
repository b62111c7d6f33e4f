"""The SQL behind the PostgreSQL store's pattern and saved-workflow methods (functions of a psycopg connection,
run on the store's owning thread).

A new version is written under a transaction-level advisory lock on the pattern's (or workflow's) name, so two
replicas registering the same pattern at once make two versions in turn, never two version 2s.

Search (:func:`search`) uses PostgreSQL's full-text search over a weighted ``tsvector`` (name A, description and
tags B, template D; English stemming), ranked by ``ts_rank`` (https://www.postgresql.org/docs/current/
textsearch-controls.html#TEXTSEARCH-RANKING): patterns with every term first (the last term also matches as a
prefix, a word half typed), then patterns with some term in the name, description or tags, ranked below them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from server.store import AgentRecord, AgentSource, PatternRecord, WorkflowRecord
from server.store.records import next_agent_version

_COLUMNS = ("name", "version", "description", "template", "variables", "metadata", "apply_to", "tags",
            "source", "created_at", "updated_at")
_SELECT = ", ".join(f"p.{c}" for c in _COLUMNS)
_TOKEN = re.compile(r"[a-z0-9]+")
_TAG_FILTER = " AND strpos(p.tags, %s) > 0"  # tags are a JSON array of [a-z0-9._+-] strings (see the SQLite store)
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"


def _record(row: Sequence[Any]) -> PatternRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    return PatternRecord(
        name=values["name"], version=values["version"], description=values["description"],
        template=values["template"], variables=tuple(json.loads(values["variables"] or "[]")),
        metadata=json.loads(values["metadata"] or "{}"), apply_to=tuple(json.loads(values["apply_to"] or "[]")),
        tags=tuple(json.loads(values["tags"] or "[]")), source=values["source"] or "registered",
        created_at=values["created_at"] or 0.0, updated_at=values["updated_at"] or 0.0)


def _row(record: PatternRecord) -> dict[str, Any]:
    return {
        "name": record.name, "version": record.version, "description": record.description,
        "template": record.template, "variables": json.dumps(list(record.variables), ensure_ascii=False),
        "metadata": json.dumps(record.metadata, ensure_ascii=False),
        "apply_to": json.dumps(list(record.apply_to), ensure_ascii=False),
        "tags": json.dumps(list(record.tags), ensure_ascii=False), "source": record.source,
        "created_at": record.created_at, "updated_at": record.updated_at}


def get(connection: Any, name: str, version: int | None = None) -> PatternRecord | None:
    if version is None:
        row = connection.execute(f"SELECT {_SELECT} FROM patterns p WHERE p.name = %s", [name]).fetchone()
    else:
        row = connection.execute(f"SELECT {_SELECT} FROM pattern_versions p WHERE p.name = %s AND p.version = %s",
                                 [name, version]).fetchone()
    return None if row is None else _record(row)


def put(connection: Any, record: PatternRecord, keep_registered: bool) -> tuple[PatternRecord, bool]:
    """Store the next version in one transaction (see :meth:`server.store.Store.put_pattern`)."""
    with connection.transaction():
        connection.execute(_LOCK, [f"pattern:{record.name}"])
        current = get(connection, record.name)
        if current is not None and ((keep_registered and current.source != "builtin")
                                    or current.same_content(record)):
            return current, False
        version = 1 if current is None else current.version + 1
        created_at = record.updated_at if current is None else current.created_at
        stored = dataclasses.replace(record, version=version, created_at=created_at)
        row = _row(stored)
        connection.execute(f"INSERT INTO pattern_versions ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
                           list(row.values()))
        row["tags_text"] = " ".join(stored.tags + ((str(stored.metadata["domain"]),)
                                                   if isinstance(stored.metadata.get("domain"), str) else ()))
        assignments = ", ".join(f"{column} = excluded.{column}" for column in row if column != "name")
        connection.execute(f"INSERT INTO patterns ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))}) "
                           f"ON CONFLICT (name) DO UPDATE SET {assignments}", list(row.values()))
    return stored, True


def versions(connection: Any, name: str) -> list[int]:
    return [v for (v,) in connection.execute(
        "SELECT version FROM pattern_versions WHERE name = %s ORDER BY version", [name])]


def current_all(connection: Any) -> list[PatternRecord]:
    return [_record(row) for row in connection.execute(f"SELECT {_SELECT} FROM patterns p ORDER BY p.name")]


def names(connection: Any, prefix: str, limit: int) -> list[str]:
    return [n for (n,) in connection.execute(
        "SELECT name FROM patterns WHERE name >= %s AND name < %s ORDER BY name LIMIT %s",
        [prefix, prefix + "\U0010ffff", limit])]


def _query(words: Sequence[str], operator: str, weights: str = "", prefix_last: bool = False) -> str:
    """A ``to_tsquery`` text of ``words`` joined by ``operator`` (``&`` or ``|``); ``weights`` (``AB``) limits
    the match to those parts; the last word also matches as a prefix when asked."""
    parts = [f"{word}:{weights}" if weights else word for word in words]
    if prefix_last and parts:
        parts[-1] = f"({parts[-1]} | {words[-1]}:*{weights})"
    return f" {operator} ".join(parts)


def search(connection: Any, terms: Sequence[str], tags: Sequence[str], limit: int
           ) -> list[tuple[PatternRecord, float]]:
    """Ranked full-text search with a tag filter (see the module docstring)."""
    tag_sql, tag_params = "".join(_TAG_FILTER for _ in tags), [f'"{tag}"' for tag in tags]
    words = [token for term in terms for token in _TOKEN.findall(term.lower())]
    if not words:
        if terms:
            return []
        rows = connection.execute(f"SELECT {_SELECT} FROM patterns p WHERE true{tag_sql} ORDER BY p.name LIMIT %s",
                                  [*tag_params, limit])
        return [(_record(row), 0.0) for row in rows]
    hits = _ranked(connection, _query(words, "&", prefix_last=True), tag_sql, tag_params, limit, [])
    if len(hits) < limit and len(words) > 1:
        floor = hits[-1][1] if hits else None
        more = _ranked(connection, _query(words, "|", "AB"), tag_sql, tag_params, limit - len(hits),
                       [record.name for record, _ in hits])
        hits += [(record, score if floor is None else min(score, floor)) for record, score in more]
    return hits


def _ranked(connection: Any, query: str, tag_sql: str, tag_params: list[str], limit: int, exclude: list[str]
            ) -> list[tuple[PatternRecord, float]]:
    exclude_sql = " AND NOT (p.name = ANY(%s))" if exclude else ""
    sql = (f"SELECT {_SELECT}, ts_rank(p.search, q) AS rank FROM patterns p, to_tsquery('english', %s) q "
           f"WHERE p.search @@ q{tag_sql}{exclude_sql} ORDER BY rank DESC, p.name LIMIT %s")
    params: list[Any] = [query, *tag_params] + ([exclude] if exclude else []) + [limit]
    return [(_record(row[:-1]), float(f"{row[-1]:.4g}")) for row in connection.execute(sql, params)]


def put_workflow(connection: Any, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
    text = json.dumps(definition, ensure_ascii=False, sort_keys=True)
    with connection.transaction():
        connection.execute(_LOCK, [f"workflow:{name}"])
        row = connection.execute("SELECT version, definition, created_at FROM workflows WHERE name = %s",
                                 [name]).fetchone()
        if row is not None and row[1] == text:
            return WorkflowRecord(name, row[0], definition, row[2], ts), False
        version, created = (row[0] + 1, row[2]) if row else (1, ts)
        connection.execute("INSERT INTO workflows (name, version, definition, created_at, updated_at) "
                           "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET version = excluded.version, "
                           "definition = excluded.definition, updated_at = excluded.updated_at",
                           [name, version, text, created, ts])
    return WorkflowRecord(name, version, definition, created, ts), True


def workflows(connection: Any, name: str | None = None) -> list[WorkflowRecord]:
    where, params = ("WHERE name = %s ", [name]) if name is not None else ("", [])
    return [WorkflowRecord(n, v, json.loads(d), c or 0.0, u or 0.0) for n, v, d, c, u in connection.execute(
        f"SELECT name, version, definition, created_at, updated_at FROM workflows {where}ORDER BY name", params)]


_AGENT_COLUMNS = "name, version, spec, created_at, updated_at, source"


def put_agent(connection: Any, name: str, spec: dict[str, Any], ts: float,
              source: AgentSource) -> tuple[AgentRecord, bool]:
    """Agent ``name``'s next version under its advisory lock (two replicas saving one agent take turns)."""
    text = json.dumps(spec, ensure_ascii=False, sort_keys=True)
    with connection.transaction():
        connection.execute(_LOCK, [f"agent:{name}"])
        row = connection.execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE name = %s", [name]).fetchone()
        current = _agent(row) if row is not None else None
        record = next_agent_version(current, name, json.loads(text), ts, source)
        if record is None:
            return current, False
        values = [name, record.version, text, record.created_at, ts, source]
        connection.execute(f"INSERT INTO agent_versions ({_AGENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)", values)
        connection.execute(f"INSERT INTO agents ({_AGENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) "
                           "DO UPDATE SET version = excluded.version, spec = excluded.spec, "
                           "updated_at = excluded.updated_at, source = excluded.source", values)
    return record, True


def agents(connection: Any, name: str | None = None, version: int | None = None) -> list[AgentRecord]:
    """The current version of every agent by name, or of agent ``name`` (its ``version`` when given)."""
    if name is None:
        sql, params = "agents ORDER BY name", []
    elif version is None:
        sql, params = "agents WHERE name = %s", [name]
    else:
        sql, params = "agent_versions WHERE name = %s AND version = %s", [name, version]
    return [_agent(row) for row in connection.execute(f"SELECT {_AGENT_COLUMNS} FROM {sql}", params)]


def _agent(row: Any) -> AgentRecord:
    return AgentRecord(row[0], row[1], json.loads(row[2]), row[3] or 0.0, row[4] or 0.0, row[5])
