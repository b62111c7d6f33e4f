"""In-memory store: simple mode and tests. Single event loop, no threads."""

from __future__ import annotations

from typing import Any

from server.store import GROUP_COLUMNS, CallRecord, GroupBy, GroupTotals


class MemoryStore:
    """Keeps call records in a list; nothing survives the process."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self.conversations: dict[str, list[tuple[str, str]]] = {}
        self.cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def record_call(self, record: CallRecord) -> None:
        """Store one record (in memory this is already off the hot path: an append)."""
        self.calls.append(record)

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

    async def load_turns(self, conversation_id: str) -> list[tuple[str, str]] | None:
        turns = self.conversations.get(conversation_id)
        return None if turns is None else list(turns)

    def append_turns(self, conversation_id: str, turns: list[tuple[str, str]], ts: float) -> None:
        self.conversations.setdefault(conversation_id, []).extend(turns)

    async def cache_get(self, key: str, since_ts: float) -> dict[str, Any] | None:
        hit = self.cache.get(key)
        return dict(hit[1]) if hit is not None and hit[0] >= since_ts else None

    def cache_put(self, key: str, entry: dict[str, Any], ts: float) -> None:
        self.cache[key] = (ts, dict(entry))

    async def flush(self) -> None:
        """Nothing is ever queued."""

    async def aclose(self) -> None:
        """Nothing to release."""
