"""Per-minute and per-hour aggregates of call records, shared by both stores: counts, tokens, cost and a latency
histogram (:mod:`server.histogram`) per (period start, provider, model, tool, A/B bucket, workflow).

They are written as records arrive, so deleting old raw records (a roll-up) loses no totals, and long windows
are summarised from a few thousand aggregates instead of millions of records (hours for windows of 12 h or
more, minutes below).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from server.histogram import add_value, merge
from server.store import GROUP_COLUMNS, CallRecord

PERIODS_S = (60, 3600)
# (period start, provider, model, tool, ab_bucket, workflow); absent values are "".
MinuteKey = tuple[float, str, str, str, str, str]


@dataclass(slots=True)
class MinuteAggregate:
    """The figures of one minute key."""

    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)

    def add(self, record: CallRecord) -> None:
        self.calls += 1
        self.errors += record.status != "ok"
        self.input_tokens += record.input_tokens or 0
        self.output_tokens += record.output_tokens or 0
        self.cost_usd += record.cost_usd or 0.0
        add_value(self.histogram, record.latency_ms)

    def absorb(self, other: MinuteAggregate) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        merge(self.histogram, other.histogram)


def period_key(record: CallRecord, period_s: int) -> MinuteKey:
    return (math.floor(record.ts / period_s) * period_s, record.provider, record.model, record.tool,
            record.ab_bucket or "", record.workflow or "")


def aggregate(records: Iterable[CallRecord], period_s: int = 60) -> dict[MinuteKey, MinuteAggregate]:
    """The per-period aggregates of ``records``."""
    out: dict[MinuteKey, MinuteAggregate] = {}
    for record in records:
        key = period_key(record, period_s)
        agg = out.get(key)
        if agg is None:
            agg = out[key] = MinuteAggregate()
        agg.add(record)
    return out


def coarsen(aggregates: dict[MinuteKey, MinuteAggregate], period_s: int) -> dict[MinuteKey, MinuteAggregate]:
    """Finer aggregates (minutes) merged into coarser periods (hours): far cheaper than re-reading records."""
    out: dict[MinuteKey, MinuteAggregate] = {}
    for key, agg in aggregates.items():
        coarse = (math.floor(key[0] / period_s) * period_s, *key[1:])
        target = out.get(coarse)  # type: ignore[arg-type]
        if target is None:
            target = out[coarse] = MinuteAggregate()  # type: ignore[index]
        target.absorb(agg)
    return out


def group_position(group_by: str) -> int:
    """Where ``group_by``'s value sits in a :data:`MinuteKey`.

    Raises:
        ValueError: not a groupable column.
    """
    if group_by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {group_by!r}")
    return 1 + GROUP_COLUMNS.index(group_by)
