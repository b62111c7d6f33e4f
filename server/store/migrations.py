"""Schema migrations: append-only named functions, applied in order on open, each recorded once.

Never edit or reorder a migration that has shipped; add a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the store is first used (server.store.sqlite_db), not at start-up
    import sqlite_utils


def _m001_calls(db: sqlite_utils.Database) -> None:
    db["calls"].create(
        {
            "id": int,
            "ts": float,
            "call_id": str,
            "tool": str,
            "provider": str,
            "model": str,
            "status": str,
            "error_class": str,
            "latency_ms": float,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "attempt": int,
        },
        pk="id",
        not_null={"ts", "call_id", "tool", "provider", "model", "status", "latency_ms"},
    )
    db["calls"].create_index(["ts"])


def _m002_ab_bucket_and_cache_flag(db: sqlite_utils.Database) -> None:
    db["calls"].add_column("ab_bucket", str)
    db["calls"].add_column("cached", int, not_null_default=0)


def _m003_conversations_and_cache(db: sqlite_utils.Database) -> None:
    db["conversations"].create({"id": str, "created_at": float, "updated_at": float}, pk="id")
    db["turns"].create(
        {"conversation_id": str, "seq": int, "role": str, "content": str, "ts": float},
        pk=("conversation_id", "seq"),
        foreign_keys=[("conversation_id", "conversations", "id")],
    )
    db["response_cache"].create(
        {"key": str, "ts": float, "provider": str, "model": str, "text": str, "input_tokens": int,
         "output_tokens": int},
        pk="key",
    )


def _m004_patterns(db: sqlite_utils.Database) -> None:
    # `patterns` holds each pattern's current version (what search and listings see); `pattern_versions` holds
    # every version, the current one included, so an old version is one primary-key read.
    # Short columns first: a row is read up to the last column a query needs, so filters on tags never
    # touch a long template's overflow pages.
    columns = {"name": str, "version": int, "tags": str, "tags_text": str, "source": str, "created_at": float,
               "updated_at": float, "apply_to": str, "description": str, "variables": str, "metadata": str,
               "template": str}
    db["patterns"].create(columns, pk="name", not_null={"version", "description", "template"},
                          if_not_exists=True)
    db["pattern_versions"].create({k: v for k, v in columns.items() if k != "tags_text"},
                                  pk=("name", "version"), if_not_exists=True)
    # FTS5 over the current versions, kept in step by triggers; porter stemming so "reviews" finds "review".
    # enable_fts runs a script, which commits: the migration is written to be re-runnable instead.
    db["patterns"].enable_fts(["name", "description", "tags_text", "template"], fts_version="FTS5",
                              create_triggers=True, tokenize="porter", replace=True)


def _m005_workflows(db: sqlite_utils.Database) -> None:
    # Saved workflow definitions (current version); run records came later (008_runs).
    db["workflows"].create({"name": str, "version": int, "definition": str, "created_at": float,
                            "updated_at": float}, pk="name", not_null={"version", "definition"})


def _m006_operations(db: sqlite_utils.Database) -> None:
    # Per-minute and per-hour aggregates (server.store.minutes), written as records arrive; backfilled from
    # existing records.
    from server.store.sqlite_ops import backfill_aggregates

    db["calls"].add_column("workflow", str)
    for table in ("call_minutes", "call_hours"):
        db[table].create(
            {"start": float, "provider": str, "model": str, "tool": str, "ab_bucket": str, "workflow": str,
             "calls": int, "errors": int, "input_tokens": int, "output_tokens": int, "cost_usd": float,
             "histogram": bytes},
            pk=("start", "provider", "model", "tool", "ab_bucket", "workflow"),
            not_null={"start", "provider", "model", "tool", "ab_bucket", "workflow"},
        )
    db["rollups"].create({"id": int, "before_ts": float, "deleted": int, "at": float}, pk="id")
    db["incidents"].create({"id": str, "opened_at": float, "status": str, "body": str}, pk="id",
                           not_null={"opened_at", "status", "body"})
    db["incidents"].create_index(["status"])
    backfill_aggregates(db)


def _m007_security(db: sqlite_utils.Database) -> None:
    # API keys: only a SHA-256 of each key is stored (see server.security.keys); `prefix` is its public part.
    db["api_keys"].create({"id": str, "name": str, "role": str, "key_hash": str, "prefix": str,
                           "created_at": float, "expires_at": float, "revoked_at": float},
                          pk="id", not_null={"name", "role", "key_hash", "created_at"}, if_not_exists=True)
    db["api_keys"].create_index(["key_hash"], unique=True, if_not_exists=True)
    # Ownership: the principal that created a conversation (NULL: created without authentication).
    if "owner" not in db["conversations"].columns_dict:
        db["conversations"].add_column("owner", str)
    # Guardrail decisions: which rule did what to which call; never prompt or answer text.
    db["guardrail_decisions"].create({"id": int, "ts": float, "tool": str, "principal": str, "stage": str,
                                      "action": str, "rule": str, "detail": str},
                                     pk="id", if_not_exists=True)
    db["guardrail_decisions"].create_index(["ts"], if_not_exists=True)


def _m008_runs(db: sqlite_utils.Database) -> None:
    # Workflow run records of the server's own (server.store.WorkflowRun): the owner is a column, so listing a
    # principal's runs is an indexed query; the runtime (DBOS) keeps the step records.
    db["runs"].create({"run_id": str, "workflow": str, "fingerprint": str, "created_at": float,
                       "updated_at": float, "owner": str, "workflow_version": int, "status": str, "steps": int,
                       "deadline_at": float, "error": str},
                      pk="run_id", not_null={"workflow", "fingerprint", "created_at", "status"})
    db["runs"].create_index(["created_at"])
    db["runs"].create_index(["owner", "created_at"])
    db["runs"].create_index(["status", "created_at"])


def _m009_audit(db: sqlite_utils.Database) -> None:
    # The append-only audit trail (server.store.AuditEntry): `seq` is the append order; an UPDATE is refused by
    # the database itself, and only retention deletes.
    db.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, ts REAL NOT NULL, "
               "actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL, step TEXT, input_sha256 TEXT, "
               "output_sha256 TEXT, detail TEXT NOT NULL, content TEXT)")
    db.execute("CREATE INDEX audit_subject ON audit (subject, seq)")
    db.execute("CREATE INDEX audit_ts ON audit (ts)")
    db.execute("CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit "
               "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END")


def _m010_agents(db: sqlite_utils.Database) -> None:
    # Agents (server.store.AgentRecord): `agents` holds each one's current version, `agent_versions` every version.
    db["agents"].create({"name": str, "version": int, "spec": str, "created_at": float, "updated_at": float},
                        pk="name", not_null={"version", "spec"})
    db["agent_versions"].create({"name": str, "version": int, "spec": str, "created_at": float, "updated_at": float},
                                pk=("name", "version"), not_null={"spec"})


def _m011_agent_source(db: sqlite_utils.Database) -> None:
    # Where each agent version came from: `config` or `registered` (versions stored before this say `registered`;
    # the next start stores the configured ones again, from `config`).
    for table in ("agents", "agent_versions"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN source TEXT NOT NULL DEFAULT 'registered'")


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_calls", _m001_calls),
    ("002_ab_bucket_and_cache_flag", _m002_ab_bucket_and_cache_flag),
    ("003_conversations_and_cache", _m003_conversations_and_cache),
    ("004_patterns", _m004_patterns),
    ("005_workflows", _m005_workflows),
    ("006_operations", _m006_operations),
    ("007_security", _m007_security),
    ("008_runs", _m008_runs),
    ("009_audit", _m009_audit),
    ("010_agents", _m010_agents),
    ("011_agent_source", _m011_agent_source),
]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations, each in its own transaction. Returns the names applied now."""
    if "_migrations" not in db.table_names():
        db["_migrations"].create({"name": str, "applied_at": float}, pk="name")
    done = {row["name"] for row in db["_migrations"].rows}
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        with db.conn:  # not db.atomic(): migration 004's FTS set-up runs a script, which commits
            step(db)
            db["_migrations"].insert({"name": name, "applied_at": time.time()})
        applied.append(name)
    return applied
