"""In-memory store: simple mode and tests. Single event loop, no threads."""

from __future__ import annotations

from server.store import GROUP_COLUMNS, CallRecord, GroupBy, GroupTotals


class MemoryStore:
    """Keeps call records in a list; nothing survives the process."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []

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
            key = getattr(record, group_by)
            totals = groups.setdefault(key, GroupTotals(key=key))
            totals.add(record.status, record.latency_ms, record.input_tokens, record.output_tokens, record.cost_usd)
        for totals in groups.values():
            totals.latencies_ms.sort()
        return [groups[key] for key in sorted(groups)]

    async def flush(self) -> None:
        """Nothing is ever queued."""

    async def aclose(self) -> None:
        """Nothing to release."""
