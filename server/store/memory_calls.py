"""In-memory :class:`~server.store.CallStore` and :class:`~server.store.GuardrailLog` (tests and simple mode):
bounded, so memory stays flat however long the process serves."""

from __future__ import annotations

from collections import deque

from server.store.minutes import PERIODS_S, MinuteKey, group_position, period_key
from server.store.records import (
    GROUP_COLUMNS,
    Aggregate,
    AggregateRow,
    CallRecord,
    CallRow,
    GroupBy,
    GroupTotals,
    GuardrailDecision,
)

MAX_RAW_CALLS = 20_000  # raw call records kept in memory; older calls live on in the minute/hour aggregates
MAX_GUARDRAIL_DECISIONS = 20_000


class MemoryCalls:
    """Raw records in a list (``records``, the newest ``max_raw_calls``), every record counted into its minute
    and hour as it arrives."""

    def __init__(self, *, max_raw_calls: int = MAX_RAW_CALLS) -> None:
        self.records: list[CallRecord] = []
        self.max_raw_calls = max_raw_calls
        self.aggregates: dict[int, dict[MinuteKey, Aggregate]] = {period: {} for period in PERIODS_S}
        self._rolled_up_before = 0.0

    def record_call(self, record: CallRecord) -> None:
        """Store one record and count it into its minute and hour (in memory this is already off the hot path)."""
        self.records.append(record)
        if len(self.records) > self.max_raw_calls:
            # As the scheduled roll-up does, early: the oldest tenth leaves the raw list (its minutes and hours
            # are already counted in the aggregates below), so memory stays bounded between roll-ups.
            self._roll_up(self.records[len(self.records) - self.max_raw_calls * 9 // 10].ts)
        for period_s, aggregates in self.aggregates.items():
            key = period_key(record, period_s)
            agg = aggregates.get(key)
            if agg is None:
                agg = aggregates[key] = Aggregate()
            agg.add(record)

    async def group_totals(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[GroupTotals]:
        """Totals per group over ``[since_ts, until_ts)``."""
        if group_by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {group_by!r}")
        groups: dict[str, GroupTotals] = {}
        for record in self.records:
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
        for record in self.records:
            if record.ts >= since_ts and record.cost_usd:
                spent[record.provider] = spent.get(record.provider, 0.0) + record.cost_usd
        return spent

    async def call_rows(self, since_ts: float, until_ts: float, group_by: GroupBy) -> list[CallRow]:
        if group_by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {group_by!r}")
        return [(getattr(r, group_by) or "", r.ts, r.status, r.latency_ms, r.input_tokens, r.output_tokens,
                 r.cost_usd) for r in self.records if since_ts <= r.ts < until_ts]

    async def aggregate_rows(self, since_ts: float, until_ts: float, group_by: GroupBy, period_s: int = 60
                             ) -> list[AggregateRow]:
        position = group_position(group_by)
        if period_s not in self.aggregates:
            raise ValueError(f"no aggregates per {period_s} s (use 60 or 3600)")
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
        kept = [r for r in self.records if r.ts >= before_ts]
        deleted = len(self.records) - len(kept)
        self.records = kept
        self._rolled_up_before = max(self._rolled_up_before, before_ts)
        return deleted

    async def rolled_up_before(self) -> float:
        return self._rolled_up_before

    async def flush(self) -> None:
        """Nothing is ever queued."""


class MemoryGuardrails:
    """The newest ``max_decisions`` guardrail decisions (``decisions``, oldest first)."""

    def __init__(self, *, max_decisions: int = MAX_GUARDRAIL_DECISIONS) -> None:
        self.decisions: deque[GuardrailDecision] = deque(maxlen=max_decisions)

    def record_guardrail(self, decision: GuardrailDecision) -> None:
        self.decisions.append(decision)

    async def list_guardrail_decisions(self, *, since_ts: float = 0.0, limit: int = 1000) -> list[GuardrailDecision]:
        return [d for d in self.decisions if d.ts >= since_ts][:limit]
