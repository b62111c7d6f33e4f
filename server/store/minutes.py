"""Per-minute and per-hour aggregates of call records, shared by both stores: counts, tokens, cost and a latency
histogram (:mod:`server.operations.histogram`) per (period start, provider, model, tool, A/B bucket, workflow).

They are written as records arrive, so deleting old raw records (a roll-up) loses no totals, and long windows
are summarised from a few thousand aggregates instead of millions of records (hours for windows of 12 h or
more, minutes below).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from server.store import GROUP_COLUMNS, Aggregate, CallRecord

PERIODS_S = (60, 3600)
# (period start, provider, model, tool, ab_bucket, workflow); absent values are "".
MinuteKey = tuple[float, str, str, str, str, str]



def period_key(record: CallRecord, period_s: int) -> MinuteKey:
    return (math.floor(record.ts / period_s) * period_s, record.provider, record.model, record.tool,
            record.ab_bucket or "", record.workflow or "")


def aggregate(records: Iterable[CallRecord], period_s: int = 60) -> dict[MinuteKey, Aggregate]:
    """The per-period aggregates of ``records``."""
    out: dict[MinuteKey, Aggregate] = {}
    for record in records:
        key = period_key(record, period_s)
        agg = out.get(key)
        if agg is None:
            agg = out[key] = Aggregate()
        agg.add(record)
    return out


def coarsen(aggregates: dict[MinuteKey, Aggregate], period_s: int) -> dict[MinuteKey, Aggregate]:
    """Finer aggregates (minutes) merged into coarser periods (hours): far cheaper than re-reading records."""
    out: dict[MinuteKey, Aggregate] = {}
    for key, agg in aggregates.items():
        coarse = (math.floor(key[0] / period_s) * period_s, *key[1:])
        target = out.get(coarse)  # type: ignore[arg-type]
        if target is None:
            target = out[coarse] = Aggregate()  # type: ignore[index]
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
