"""The SQLite audit trail (table ``audit``, migration ``009_audit``): append-only, ordered by ``seq``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from server.store.records import AuditEntry

if TYPE_CHECKING:  # the row helpers serve the PostgreSQL store too
    import sqlite_utils

    from server.store.sqlite_db import SQLiteDatabase

COLUMNS = ("seq", "id", "ts", "actor", "action", "subject", "step", "input_sha256", "output_sha256", "detail",
           "content")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit"
_INSERT = (f"INSERT INTO audit ({', '.join(COLUMNS[1:])}) VALUES ({', '.join(['?'] * (len(COLUMNS) - 1))}) "
           "ON CONFLICT(id) DO NOTHING")


def entry_row(entry: AuditEntry) -> list[Any]:
    """The insert's parameters (``detail`` and ``content`` as JSON text)."""
    return [entry.id, entry.ts, entry.actor, entry.action, entry.subject, entry.step, entry.input_sha256,
            entry.output_sha256, json.dumps(entry.detail, ensure_ascii=False, sort_keys=True),
            None if entry.content is None else json.dumps(entry.content, ensure_ascii=False, sort_keys=True)]


def entry_of(row: Sequence[Any]) -> AuditEntry:
    """An entry from a selected row (JSON columns as text or already decoded)."""
    seq, id_, ts, actor, action, subject, step, input_sha, output_sha, detail, content = row
    loads = (lambda v: json.loads(v) if isinstance(v, str) else v)
    return AuditEntry(id=id_, ts=ts, actor=actor, action=action, subject=subject, step=step,
                      input_sha256=input_sha, output_sha256=output_sha, detail=loads(detail) or {},
                      content=loads(content), seq=seq)


class SQLiteAudit:
    """:class:`~server.store.AuditTrail` in ``audit``."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def append_audit(self, entries: Sequence[AuditEntry]) -> int:
        rows = [entry_row(e) for e in entries]

        def append(db: sqlite_utils.Database) -> int:
            with db.atomic():
                return sum(db.execute(_INSERT, row).rowcount for row in rows)

        return await self._db.call(append, f"{len(rows)} audit entries", write=True) if rows else 0

    async def audit_of(self, subject: str, *, limit: int = 10_000) -> list[AuditEntry]:
        rows = await self._db.call(lambda db: list(db.execute(
            f"{_SELECT} WHERE subject = ? ORDER BY seq LIMIT ?", [subject, limit])), f"the audit of {subject}")
        return [entry_of(r) for r in rows]

    async def audit_since(self, since_ts: float, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        rows = await self._db.call(lambda db: list(db.execute(
            f"{_SELECT} WHERE ts >= ? AND seq > ? ORDER BY seq LIMIT ?", [since_ts, after_seq, limit])),
            "the audit trail")
        return [entry_of(r) for r in rows]

    async def purge_audit(self, before_ts: float) -> int:
        def purge(db: sqlite_utils.Database) -> int:
            with db.atomic():
                return db.execute("DELETE FROM audit WHERE ts < ?", [before_ts]).rowcount

        return await self._db.call(purge, "the audit retention", write=True)
