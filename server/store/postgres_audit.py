"""The PostgreSQL audit trail (table ``audit``, migration ``009_audit``), shared by every replica: append-only
(an UPDATE is refused by a trigger), ordered by ``seq``; ``ON CONFLICT (id) DO NOTHING`` keeps the first of two
replicas appending the same fact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.store.postgres_db import PostgresWorker
from server.store.records import AuditEntry
from server.store.sqlite_audit import COLUMNS, entry_of, entry_row

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit"
_INSERT = (f"INSERT INTO audit ({', '.join(COLUMNS[1:])}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, "
           "%s::jsonb) ON CONFLICT (id) DO NOTHING")


class PostgresAudit:
    """:class:`~server.store.AuditTrail` in ``audit``."""

    def __init__(self, db: PostgresWorker) -> None:
        self._db = db

    async def append_audit(self, entries: Sequence[AuditEntry]) -> int:
        rows = [entry_row(e) for e in entries]

        def append(c: Any) -> int:
            with c.transaction():
                return sum(c.execute(_INSERT, row).rowcount for row in rows)

        return await self._db.call(append, f"{len(rows)} audit entries", write=True) if rows else 0

    async def audit_of(self, subject: str, *, limit: int = 10_000) -> list[AuditEntry]:
        rows = await self._db.call(lambda c: c.execute(f"{_SELECT} WHERE subject = %s ORDER BY seq LIMIT %s",
                                                       [subject, limit]).fetchall(), f"the audit of {subject}")
        return [entry_of(r) for r in rows]

    async def audit_since(self, since_ts: float, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        rows = await self._db.call(lambda c: c.execute(
            f"{_SELECT} WHERE ts >= %s AND seq > %s ORDER BY seq LIMIT %s", [since_ts, after_seq, limit]).fetchall(),
            "the audit trail")
        return [entry_of(r) for r in rows]

    async def purge_audit(self, before_ts: float) -> int:
        return await self._db.call(lambda c: c.execute("DELETE FROM audit WHERE ts < %s", [before_ts]).rowcount,
                                   "the audit retention", write=True)
