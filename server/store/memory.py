"""In-memory store: simple mode and tests. Single event loop, no threads."""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from server.store import (
    GROUP_COLUMNS,
    Aggregate,
    AggregateRow,
    ApiKeyRecord,
    CallRecord,
    CallRow,
    GroupBy,
    GroupTotals,
    GuardrailDecision,
    PatternRecord,
    WorkflowRecord,
)
from server.store.minutes import PERIODS_S, MinuteKey, group_position, period_key

_WORD = re.compile(r"[^\W_]+")
# Field weights as in the SQLite store's bm25 (name, description, tags, template).
_WEIGHTS = (10.0, 4.0, 4.0, 1.0)


MAX_CONVERSATIONS = 10_000  # kept in memory (simple mode); the SQLite store keeps every one
MAX_RAW_CALLS = 20_000  # raw call records kept in memory; older calls live on in the minute/hour aggregates


class MemoryStore:
    """Keeps call records in a list; nothing survives the process."""

    def __init__(self, *, max_conversations: int = MAX_CONVERSATIONS, max_raw_calls: int = MAX_RAW_CALLS) -> None:
        self.calls: list[CallRecord] = []
        self.max_raw_calls = max_raw_calls
        # Least recently used first; bounded because every orchestrate call starts one and nothing here expires.
        self.conversations: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self.max_conversations = max_conversations
        self.cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self.patterns: dict[str, list[PatternRecord]] = {}  # name -> every version, oldest first
        self.workflows: dict[str, WorkflowRecord] = {}
        self.aggregates: dict[int, dict[MinuteKey, Aggregate]] = {period: {} for period in PERIODS_S}
        self.incidents: dict[str, dict[str, Any]] = {}
        self._rolled_up_before = 0.0
        self.owners: dict[str, str | None] = {}  # conversation id -> owner
        self.api_keys: dict[str, ApiKeyRecord] = {}
        self.guardrail_decisions: list[GuardrailDecision] = []

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

    def record_call(self, record: CallRecord) -> None:
        """Store one record and count it into its minute and hour (in memory this is already off the hot path)."""
        self.calls.append(record)
        if len(self.calls) > self.max_raw_calls:
            # As the scheduled roll-up does, early: the oldest tenth leaves the raw list (its minutes and hours
            # are already counted in the aggregates below), so memory stays bounded between roll-ups.
            self._roll_up(self.calls[len(self.calls) - self.max_raw_calls * 9 // 10].ts)
        for period_s, aggregates in self.aggregates.items():
            key = period_key(record, period_s)
            agg = aggregates.get(key)
            if agg is None:
                agg = aggregates[key] = Aggregate()
            agg.add(record)

    async def call_rows(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[CallRow]:
        if group_by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {group_by!r}")
        return [(getattr(r, group_by) or "", r.ts, r.status, r.latency_ms, r.input_tokens, r.output_tokens,
                 r.cost_usd) for r in self.calls if since_ts <= r.ts < until_ts]

    async def aggregate_rows(self, since_ts: float, until_ts: float, group_by: GroupBy, period_s: int = 60
                             ) -> list[AggregateRow]:
        position = group_position(group_by)
        rows: dict[tuple[float, str], AggregateRow] = {}
        for key, agg in self.aggregates[period_s].items():
            if not since_ts <= key[0] < until_ts:
                continue
            row = rows.get((key[0], key[position]))
            if row is None:
                row = rows[(key[0], key[position])] = AggregateRow(start=key[0], key=key[position])
            row.absorb(agg)
        return list(rows.values())

    async def roll_up(self, before_ts: float) -> int:
        return self._roll_up(before_ts)

    def _roll_up(self, before_ts: float) -> int:
        kept = [r for r in self.calls if r.ts >= before_ts]
        deleted = len(self.calls) - len(kept)
        self.calls = kept
        self._rolled_up_before = max(self._rolled_up_before, before_ts)
        return deleted

    async def rolled_up_before(self) -> float:
        return self._rolled_up_before

    async def put_incident(self, incident: dict[str, Any]) -> None:
        self.incidents[incident["id"]] = dict(incident)

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        found = self.incidents.get(incident_id)
        return None if found is None else dict(found)

    async def list_incidents(self, *, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        chosen = [dict(i) for i in self.incidents.values() if not active_only or i["status"] != "resolved"]
        chosen.sort(key=lambda i: (-i["opened_at"], i["id"]))
        return chosen[:limit]

    async def group_totals(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[GroupTotals]:
        """Totals per group over ``[since_ts, until_ts)``."""
        if group_by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {group_by!r}")
        groups: dict[str, GroupTotals] = {}
        for record in self.calls:
            if not since_ts <= record.ts < until_ts:
                continue
            key = getattr(record, group_by) or ""
            totals = groups.setdefault(key, GroupTotals(key=key))
            totals.add(record.status, record.latency_ms, record.input_tokens, record.output_tokens, record.cost_usd)
        for totals in groups.values():
            totals.latencies_ms.sort()
        return [groups[key] for key in sorted(groups)]

    async def cost_by_provider(self, since_ts: float) -> dict[str, float]:
        """USD per provider since ``since_ts``."""
        spent: dict[str, float] = {}
        for record in self.calls:
            if record.ts >= since_ts and record.cost_usd:
                spent[record.provider] = spent.get(record.provider, 0.0) + record.cost_usd
        return spent

    async def load_turns(self, conversation_id: str, *, owner: str | None = None
                         ) -> list[tuple[str, str]] | None:
        turns = self.conversations.get(conversation_id)
        if turns is None or (owner is not None and self.owners.get(conversation_id) != owner):
            return None
        self.conversations.move_to_end(conversation_id)
        return list(turns)

    def append_turns(self, conversation_id: str, turns: list[tuple[str, str]], ts: float, *,
                     owner: str | None = None) -> None:
        """Add turns to a conversation (created if new, owned by ``owner``). Past ``max_conversations`` the
        least recently used conversation is dropped; continuing it then gets "not found", as an unknown id."""
        existing = self.conversations.get(conversation_id)
        if existing is None:
            existing = self.conversations[conversation_id] = []
            self.owners[conversation_id] = owner
            while len(self.conversations) > self.max_conversations:
                dropped, _ = self.conversations.popitem(last=False)
                self.owners.pop(dropped, None)
        else:
            self.conversations.move_to_end(conversation_id)
        existing.extend(turns)

    async def put_api_key(self, record: ApiKeyRecord) -> None:
        if record.id in self.api_keys or any(k.key_hash == record.key_hash for k in self.api_keys.values()):
            raise ValueError(f"API key {record.id} exists")
        self.api_keys[record.id] = record

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        return next((k for k in self.api_keys.values() if k.key_hash == key_hash), None)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        return sorted(self.api_keys.values(), key=lambda k: (k.created_at, k.id))

    async def revoke_api_key(self, key_id: str, ts: float) -> bool:
        record = self.api_keys.get(key_id)
        if record is None or record.revoked_at is not None:
            return False
        self.api_keys[key_id] = dataclasses.replace(record, revoked_at=ts)
        return True

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        self.guardrail_decisions.append(decision)

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        hit = self.cache.get(key)
        return dict(hit[1]) if hit is not None and hit[0] >= since_ts else None

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        self.cache[key] = (ts, dict(entry))

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        """Store the next version (no await inside: atomic on the event loop)."""
        history = self.patterns.get(record.name, [])
        current = history[-1] if history else None
        if current is not None and (keep_registered and current.source != "builtin" or current.same_content(record)):
            return current, False
        stored = dataclasses.replace(record, version=len(history) + 1,
                                     created_at=record.updated_at if current is None else current.created_at)
        self.patterns.setdefault(record.name, []).append(stored)
        return stored, True

    async def get_pattern(self, name: str, version: int | None = None) -> PatternRecord | None:
        history = self.patterns.get(name, [])
        if version is None:
            return history[-1] if history else None
        return history[version - 1] if 1 <= version <= len(history) else None

    async def pattern_versions(self, name: str) -> list[int]:
        return [r.version for r in self.patterns.get(name, [])]

    async def list_patterns(self) -> list[PatternRecord]:
        return [self.patterns[name][-1] for name in sorted(self.patterns)]

    async def search_patterns(self, terms: Sequence[str], tags: Sequence[str], limit: int
                              ) -> list[tuple[PatternRecord, float]]:
        """The SQLite store's passes for narrow terms (every term anywhere, then some term in name, description
        or tags), scored by weighted word counts; no stemming, no broad-term handling: simple mode's libraries
        are small."""
        candidates = [r for r in await self.list_patterns() if set(tags) <= set(r.tags)]
        if not terms:
            return [(record, 0.0) for record in candidates[:limit]]
        words = {r.name: [_WORD.findall(text.lower()) for text in _fields(r)] for r in candidates}
        last = len(terms) - 1
        prefix = not any(terms[last] in field for fields in words.values() for field in fields)

        def hits(term_index: int, field: list[str]) -> int:
            term = terms[term_index]
            return sum(1 for w in field if w == term or prefix and term_index == last and w.startswith(term))

        chosen = [i for i in range(len(terms)) if any(hits(i, f) for fs in words.values() for f in fs)]
        passes = [(4, True)] + ([(3, False)] if len(chosen) > 1 else [])
        found: list[tuple[PatternRecord, float]] = []
        for fields, every in passes:
            ranked = []
            for record in candidates:
                if any(record.name == r.name for r, _ in found):
                    continue
                counts = [[hits(i, f) for f in words[record.name][:fields]] for i in chosen]
                if chosen and (all if every else any)(any(c) for c in counts):
                    ranked.append((record, float(sum(w * c for per_term in counts
                                                     for w, c in zip(_WEIGHTS, per_term, strict=False)))))
            ranked.sort(key=lambda hit: (-hit[1], hit[0].name))
            floor = found[-1][1] if found else None
            found += [(r, sc if floor is None else min(sc, floor)) for r, sc in ranked[:limit - len(found)]]
            if len(found) >= limit:
                break
        return found

    async def pattern_names(self, prefix: str, limit: int) -> list[str]:
        return [name for name in sorted(self.patterns) if name.startswith(prefix)][:limit]

    async def flush(self) -> None:
        """Nothing is ever queued."""

    async def aclose(self) -> None:
        """Nothing to release."""


def _fields(record: PatternRecord) -> tuple[str, str, str, str]:
    """The searched fields, in weight order: name, description, tags (and domain), template."""
    domain = record.metadata.get("domain")
    return (record.name, record.description,
            " ".join(record.tags) + (f" {domain}" if isinstance(domain, str) else ""), record.template)
