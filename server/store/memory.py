"""In-memory store: tests, and simple mode's records. Single event loop, no threads; nothing survives the process.

Every part is bounded (conversations, cache entries and run records by count, least recently used or oldest
finished first; call records and guardrail decisions in :mod:`.memory_calls`), since simple mode serves for as
long as its process lives and nothing here expires by itself.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from server.store.errors import StorageError
from server.store.memory_calls import MAX_RAW_CALLS, MemoryCalls, MemoryGuardrails
from server.store.memory_patterns import MemoryPatterns
from server.store.records import (
    AgentRecord,
    AgentSource,
    ApiKeyRecord,
    AuditEntry,
    RunState,
    WorkflowRecord,
    WorkflowRun,
    next_agent_version,
)

MAX_CONVERSATIONS = 10_000  # kept in memory (simple mode); the SQLite store keeps every one
MAX_CACHE_ENTRIES = 10_000
MAX_RUNS = 10_000
MAX_AUDIT_ENTRIES = 100_000


class MemoryConversations:
    """The ``max_conversations`` most recently used conversations (``turns``: id -> turns, ``owners``: id -> owner)."""

    def __init__(self, *, max_conversations: int = MAX_CONVERSATIONS) -> None:
        self.turns: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()  # least recently used first
        self.owners: dict[str, str | None] = {}
        self.max_conversations = max_conversations

    async def load_turns(self, conversation_id: str, *, owner: str | None = None
                         ) -> list[tuple[str, str]] | None:
        turns = self.turns.get(conversation_id)
        if turns is None or (owner is not None and self.owners.get(conversation_id) != owner):
            return None
        self.turns.move_to_end(conversation_id)
        return list(turns)

    async def append_turns(self, conversation_id: str, turns: Sequence[tuple[str, str]], ts: float, *,
                           owner: str | None = None) -> None:
        """Add turns to a conversation (created if new, owned by ``owner``). Past ``max_conversations`` the
        least recently used conversation is dropped; continuing it then gets "not found", as an unknown id."""
        existing = self.turns.get(conversation_id)
        if existing is None:
            existing = self.turns[conversation_id] = []
            self.owners[conversation_id] = owner
            while len(self.turns) > self.max_conversations:
                dropped, _ = self.turns.popitem(last=False)
                self.owners.pop(dropped, None)
        else:
            self.turns.move_to_end(conversation_id)
        existing.extend(turns)


class MemoryCache:
    """The ``max_entries`` most recently stored cache entries."""

    def __init__(self, *, max_entries: int = MAX_CACHE_ENTRIES) -> None:
        self.entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.max_entries = max_entries

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        hit = self.entries.get(key)
        return dict(hit[1]) if hit is not None and hit[0] >= since_ts else None

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        self.entries.pop(key, None)
        self.entries[key] = (ts, dict(entry))
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


class MemoryWorkflows:
    """Saved workflows in ``workflows`` (name -> current record)."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowRecord] = {}

    async def put_workflow(self, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
        """Save a workflow definition (a new version when it changed)."""
        current = self.workflows.get(name)
        if current is not None and current.definition == definition:
            return current, False
        record = WorkflowRecord(name, (current.version if current else 0) + 1, definition,
                                current.created_at if current else ts, ts)
        self.workflows[name] = record
        return record, True

    async def get_workflow(self, name: str) -> WorkflowRecord | None:
        return self.workflows.get(name)

    async def list_workflows(self) -> list[WorkflowRecord]:
        return [self.workflows[name] for name in sorted(self.workflows)]


class MemoryAgents:
    """Agents in ``versions`` (name -> every version, oldest first)."""

    def __init__(self) -> None:
        self.versions: dict[str, list[AgentRecord]] = {}

    async def put_agent(self, name: str, spec: dict[str, Any], ts: float, *,
                        source: AgentSource = "registered") -> tuple[AgentRecord, bool]:
        kept = self.versions.setdefault(name, [])
        record = next_agent_version(kept[-1] if kept else None, name, json.loads(json.dumps(spec)), ts, source)
        if record is None:
            return kept[-1], False
        kept.append(record)
        return record, True

    async def get_agent(self, name: str, version: int | None = None) -> AgentRecord | None:
        kept = self.versions.get(name) or []
        if version is None:
            return kept[-1] if kept else None
        return kept[version - 1] if 0 < version <= len(kept) else None

    async def list_agents(self) -> list[AgentRecord]:
        return [self.versions[name][-1] for name in sorted(self.versions) if self.versions[name]]


class MemoryRuns:
    """Run records in ``runs`` (id -> record, oldest first). Past ``max_runs`` the oldest finished records go
    (a run still going is never dropped: the workflow limits bound how many there are)."""

    def __init__(self, *, max_runs: int = MAX_RUNS) -> None:
        self.runs: dict[str, WorkflowRun] = {}
        self.max_runs = max_runs

    async def create_run(self, run: WorkflowRun) -> tuple[WorkflowRun, bool]:
        existing = self.runs.get(run.run_id)
        if existing is not None:
            return existing, False
        stored = run if run.updated_at else dataclasses.replace(run, updated_at=run.created_at)
        self.runs[run.run_id] = stored
        if len(self.runs) > self.max_runs:
            for run_id in [r.run_id for r in self.runs.values() if r.finished][:len(self.runs) - self.max_runs]:
                del self.runs[run_id]
        return stored, True

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        return self.runs.get(run_id)

    async def list_runs(self, *, owner: str | None = None, status: Sequence[RunState] = (), limit: int = 50,
                        offset: int = 0) -> list[WorkflowRun]:
        chosen = [r for r in self.runs.values()
                  if (owner is None or r.owner == owner) and (not status or r.status in status)]
        chosen.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return chosen[offset:offset + limit]

    async def set_run_status(self, run_id: str, status: RunState, ts: float, *, error: str | None = None,
                             if_unfinished: bool = True) -> bool:
        run = self.runs.get(run_id)
        if run is None or (if_unfinished and run.finished):
            return False
        self.runs[run_id] = dataclasses.replace(run, status=status, updated_at=ts, error=error)
        return True


class MemoryIncidents:
    """Incidents in ``incidents`` (id -> JSON-ready dict)."""

    def __init__(self) -> None:
        self.incidents: dict[str, dict[str, Any]] = {}

    async def put_incident(self, incident: dict[str, Any]) -> None:
        self.incidents[incident["id"]] = dict(incident)

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        found = self.incidents.get(incident_id)
        return None if found is None else dict(found)

    async def list_incidents(self, *, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        chosen = [dict(i) for i in self.incidents.values() if not active_only or i["status"] != "resolved"]
        chosen.sort(key=lambda i: (-i["opened_at"], i["id"]))
        return chosen[:limit]


class MemoryKeys:
    """API key records in ``keys`` (id -> record)."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKeyRecord] = {}

    async def put_api_key(self, record: ApiKeyRecord) -> None:
        if record.id in self.keys or any(k.key_hash == record.key_hash for k in self.keys.values()):
            raise StorageError("conflict", f"API key {record.id}")
        self.keys[record.id] = record

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        return next((k for k in self.keys.values() if k.key_hash == key_hash), None)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        return sorted(self.keys.values(), key=lambda k: (k.created_at, k.id))

    async def revoke_api_key(self, key_id: str, ts: float) -> bool:
        record = self.keys.get(key_id)
        if record is None or record.revoked_at is not None:
            return False
        self.keys[key_id] = dataclasses.replace(record, revoked_at=ts)
        return True


class MemoryAudit:
    """The audit trail in a list (append order), at most ``max_entries`` (the oldest go first: simple mode keeps
    no trail beyond its process anyway)."""

    def __init__(self, *, max_entries: int = MAX_AUDIT_ENTRIES) -> None:
        self.entries: OrderedDict[str, AuditEntry] = OrderedDict()
        self.max_entries = max_entries
        self._seq = 0

    async def append_audit(self, entries: Sequence[AuditEntry]) -> int:
        added = 0
        for entry in entries:
            if entry.id in self.entries:
                continue
            self._seq += 1
            self.entries[entry.id] = dataclasses.replace(entry, seq=self._seq)
            added += 1
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return added

    async def audit_of(self, subject: str, *, limit: int = 10_000) -> list[AuditEntry]:
        return [e for e in self.entries.values() if e.subject == subject][:limit]

    async def audit_since(self, since_ts: float, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        return [e for e in self.entries.values() if e.ts >= since_ts and e.seq > after_seq][:limit]

    async def purge_audit(self, before_ts: float) -> int:
        old = [key for key, e in self.entries.items() if e.ts < before_ts]
        for key in old:
            del self.entries[key]
        return len(old)


class MemoryStore:
    """:class:`~server.store.Store` in memory; each part is reachable for tests (``store.calls.records`` …)."""

    def __init__(self, *, max_conversations: int = MAX_CONVERSATIONS, max_raw_calls: int = MAX_RAW_CALLS,
                 max_runs: int = MAX_RUNS) -> None:
        self.calls = MemoryCalls(max_raw_calls=max_raw_calls)
        self.guardrails = MemoryGuardrails()
        self.conversations = MemoryConversations(max_conversations=max_conversations)
        self.cache = MemoryCache()
        self.patterns: MemoryPatterns = MemoryPatterns()
        self.workflows: MemoryWorkflows = MemoryWorkflows()
        self.runs = MemoryRuns(max_runs=max_runs)
        self.incidents = MemoryIncidents()
        self.keys = MemoryKeys()
        self.agents = MemoryAgents()
        self.audit = MemoryAudit()

    async def aclose(self) -> None:
        """Nothing to release."""
