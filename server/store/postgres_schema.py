"""The PostgreSQL store's schema: append-only named migrations, applied in order on open, each recorded once.

Replicas starting together migrate one at a time: the whole run holds a transaction-level advisory lock
(:data:`MIGRATION_LOCK`), so the second one finds the migrations applied. Never edit or reorder a migration that
has shipped; add a new one. JSON values are stored as text (as the SQLite store does), so a definition reads back
exactly as written; DBOS keeps its own tables in the ``dbos`` schema of the same database.
"""

from __future__ import annotations

import time
from typing import Any

MIGRATION_LOCK = 0x61696F6D_0001  # "aiom" + 1: the key of the migration advisory lock

_CALLS = """
CREATE TABLE calls (
    id bigserial PRIMARY KEY, ts double precision NOT NULL, call_id text NOT NULL, tool text NOT NULL,
    provider text NOT NULL, model text NOT NULL, status text NOT NULL, error_class text,
    latency_ms double precision NOT NULL, input_tokens bigint, output_tokens bigint, cost_usd double precision,
    attempt integer, ab_bucket text, cached boolean NOT NULL DEFAULT false, workflow text);
CREATE INDEX calls_ts ON calls (ts);
CREATE TABLE rollups (id bigserial PRIMARY KEY, before_ts double precision NOT NULL, deleted bigint NOT NULL,
    at double precision NOT NULL);
CREATE TABLE incidents (id text PRIMARY KEY, opened_at double precision NOT NULL, status text NOT NULL,
    body text NOT NULL);
CREATE INDEX incidents_status ON incidents (status);
"""
_AGGREGATES = """
CREATE TABLE {table} (
    start double precision NOT NULL, provider text NOT NULL, model text NOT NULL, tool text NOT NULL,
    ab_bucket text NOT NULL, workflow text NOT NULL, calls bigint NOT NULL, errors bigint NOT NULL,
    input_tokens bigint NOT NULL, output_tokens bigint NOT NULL, cost_usd double precision NOT NULL,
    histogram bytea NOT NULL, PRIMARY KEY (start, provider, model, tool, ab_bucket, workflow));
"""
_CONVERSATIONS = """
CREATE TABLE conversations (id text PRIMARY KEY, created_at double precision NOT NULL,
    updated_at double precision NOT NULL, owner text);
CREATE TABLE turns (conversation_id text NOT NULL REFERENCES conversations (id), seq integer NOT NULL,
    role text NOT NULL, content text NOT NULL, ts double precision NOT NULL, PRIMARY KEY (conversation_id, seq));
CREATE TABLE response_cache (key text PRIMARY KEY, ts double precision NOT NULL, provider text, model text,
    text text, input_tokens bigint, output_tokens bigint);
"""
# `patterns` holds each pattern's current version, with a weighted full-text vector (name A, description and tags
# B, template D; English stemming, as the SQLite store's porter tokenizer); `pattern_versions` holds every version.
_PATTERNS = """
CREATE TABLE patterns (
    name text PRIMARY KEY, version integer NOT NULL, tags text NOT NULL, tags_text text NOT NULL, source text,
    created_at double precision, updated_at double precision, apply_to text, description text NOT NULL,
    variables text, metadata text, template text NOT NULL,
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', name), 'A')
        || setweight(to_tsvector('english', description || ' ' || tags_text), 'B')
        || setweight(to_tsvector('english', template), 'D')) STORED);
CREATE INDEX patterns_search ON patterns USING gin (search);
CREATE TABLE pattern_versions (
    name text NOT NULL, version integer NOT NULL, tags text NOT NULL, source text, created_at double precision,
    updated_at double precision, apply_to text, description text NOT NULL, variables text, metadata text,
    template text NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE workflows (name text PRIMARY KEY, version integer NOT NULL, definition text NOT NULL,
    created_at double precision, updated_at double precision);
"""
_SECURITY = """
CREATE TABLE api_keys (id text PRIMARY KEY, name text NOT NULL, role text NOT NULL, key_hash text NOT NULL UNIQUE,
    prefix text, created_at double precision NOT NULL, expires_at double precision, revoked_at double precision);
CREATE TABLE guardrail_decisions (id bigserial PRIMARY KEY, ts double precision, tool text, principal text,
    stage text, action text, rule text, detail text);
CREATE INDEX guardrail_decisions_ts ON guardrail_decisions (ts);
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("001_calls_and_incidents", _CALLS),
    ("002_aggregates", _AGGREGATES.format(table="call_minutes") + _AGGREGATES.format(table="call_hours")),
    ("003_conversations_and_cache", _CONVERSATIONS),
    ("004_patterns_and_workflows", _PATTERNS),
    ("005_security", _SECURITY),
    # Once-per-interval jobs across replicas (server.store.postgres_locks.claim_interval): the last claimed slot.
    ("006_interval_jobs", "CREATE TABLE interval_jobs (name text PRIMARY KEY, slot bigint NOT NULL, "
                          "interval_s double precision NOT NULL, claimed_at double precision NOT NULL);"),
    # Keys every replica must hold alike (the MCP SDK's request-state sealing key), made by the first replica.
    ("007_shared_keys", "CREATE TABLE shared_keys (name text PRIMARY KEY, key bytea NOT NULL, "
                        "created_at double precision NOT NULL);"),
    # Workflow run records of the server's own (server.store.WorkflowRun), as SQLite's 008_runs.
    ("008_runs", """
CREATE TABLE runs (run_id text PRIMARY KEY, workflow text NOT NULL, fingerprint text NOT NULL,
    created_at double precision NOT NULL, updated_at double precision, owner text, workflow_version integer,
    status text NOT NULL, steps integer, deadline_at double precision, error text);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_owner ON runs (owner, created_at);
CREATE INDEX runs_status ON runs (status, created_at);
"""),
    # The append-only audit trail, as SQLite's 009_audit: an UPDATE is refused by the database itself.
    ("009_audit", """
CREATE TABLE audit (seq bigserial PRIMARY KEY, id text NOT NULL UNIQUE, ts double precision NOT NULL,
    actor text NOT NULL, action text NOT NULL, subject text NOT NULL, step text, input_sha256 text,
    output_sha256 text, detail jsonb NOT NULL, content jsonb);
CREATE INDEX audit_subject ON audit (subject, seq);
CREATE INDEX audit_ts ON audit (ts);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
"""),
    # Agents (server.store.AgentRecord), as SQLite's 010_agents: the current version, and every version.
    ("010_agents", """
CREATE TABLE agents (name text PRIMARY KEY, version integer NOT NULL, spec text NOT NULL,
    created_at double precision, updated_at double precision);
CREATE TABLE agent_versions (name text NOT NULL, version integer NOT NULL, spec text NOT NULL,
    created_at double precision, updated_at double precision, PRIMARY KEY (name, version));
"""),
    # As SQLite's 011_agent_source: where each agent version came from, `config` or `registered`.
    ("011_agent_source", """
ALTER TABLE agents ADD COLUMN source text NOT NULL DEFAULT 'registered';
ALTER TABLE agent_versions ADD COLUMN source text NOT NULL DEFAULT 'registered';
"""),
]


def migrate(connection: Any) -> list[str]:
    """Apply pending migrations in one transaction on a psycopg connection. Returns the names applied now."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        connection.execute("CREATE TABLE IF NOT EXISTS _migrations (name text PRIMARY KEY, "
                           "applied_at double precision NOT NULL)")
        done = {name for (name,) in connection.execute("SELECT name FROM _migrations")}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            connection.execute(sql)
            connection.execute("INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)", [name, time.time()])
            applied.append(name)
    return applied
