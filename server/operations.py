"""Operational summaries of recorded calls: windows, percentiles, error rates, alerts.

Percentiles are exact over the raw records in the window, by linear interpolation between closest ranks
(Hyndman & Fan 1996, definition 7; numpy's default).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from server.config import AlertsConfig, ProviderConfig
from server.store import GroupBy, GroupTotals, Store

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_WINDOW_S = 366 * 86400


def parse_window(text: str) -> float:
    """``"15m"``, ``"1h"``, ``"24h"``, ``"7d"`` … to seconds.

    Raises:
        ValueError: not of the form NUMBER+UNIT (s, m, h, d, w), zero, or longer than a year.
    """
    match = _WINDOW.match(text or "")
    if not match:
        raise ValueError(f"window {text!r} is not of the form 15m, 1h, 24h, 7d (units s, m, h, d, w)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_WINDOW_S:
        raise ValueError(f"window {text!r} must be longer than 0 and at most 366d")
    return seconds


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100) of ascending values, linear interpolation (H&F definition 7); ``None`` if empty."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class GroupSummary(BaseModel):
    """One group's figures over the window. Latencies in milliseconds, cost in USD."""

    key: str
    calls: int
    errors: int
    error_rate: float
    throughput_per_min: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Alert(BaseModel):
    """A threshold crossed by a group in the window."""

    group: str
    metric: str
    value: float
    threshold: float


class ProviderStatus(BaseModel):
    """A configured provider, without secrets."""

    name: str
    kind: str
    model: str
    priority: int
    ready: bool
    problem: str | None = None


class OperationsSummary(BaseModel):
    """The ``monitor_operations`` result."""

    window: str
    window_s: float
    group_by: str
    since: float
    until: float
    groups: list[GroupSummary]
    alerts: list[Alert]
    incidents: list[dict]
    providers: list[ProviderStatus]


def summarize_group(totals: GroupTotals, window_s: float) -> GroupSummary:
    """Figures for one group; ``totals.latencies_ms`` must be sorted."""
    lat = totals.latencies_ms
    return GroupSummary(
        key=totals.key,
        calls=totals.calls,
        errors=totals.errors,
        error_rate=totals.errors / totals.calls if totals.calls else 0.0,
        throughput_per_min=totals.calls / (window_s / 60),
        latency_p50_ms=percentile(lat, 50),
        latency_p95_ms=percentile(lat, 95),
        latency_p99_ms=percentile(lat, 99),
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cost_usd=round(totals.cost_usd, 10),
    )


def alerts_for(groups: Sequence[GroupSummary], thresholds: AlertsConfig) -> list[Alert]:
    """Thresholds from ``[alerts]`` that a group crosses."""
    alerts = []
    for group in groups:
        if thresholds.latency_p95_ms is not None and (group.latency_p95_ms or 0) > thresholds.latency_p95_ms:
            alerts.append(Alert(group=group.key, metric="latency_p95_ms", value=group.latency_p95_ms or 0,
                                threshold=thresholds.latency_p95_ms))
        if thresholds.error_rate is not None and group.error_rate > thresholds.error_rate:
            alerts.append(Alert(group=group.key, metric="error_rate", value=group.error_rate,
                                threshold=thresholds.error_rate))
    return alerts


async def operations_summary(
    store: Store,
    providers: Sequence[ProviderConfig],
    thresholds: AlertsConfig,
    *,
    window: str = "1h",
    group_by: GroupBy = "provider",
    clock: Callable[[], float] = time.time,
) -> OperationsSummary:
    """Summarise the calls recorded in the last ``window``.

    Raises:
        ValueError: a malformed window or an unknown ``group_by``.
    """
    window_s = parse_window(window)
    until = clock()
    since = until - window_s
    await store.flush()
    groups = [summarize_group(t, window_s) for t in await store.group_totals(since, until + 1e-6, group_by)]
    return OperationsSummary(
        window=window.strip(),
        window_s=window_s,
        group_by=group_by,
        since=since,
        until=until,
        groups=groups,
        alerts=alerts_for(groups, thresholds),
        incidents=[],
        providers=[
            ProviderStatus(name=p.name, kind=p.kind, model=p.model, priority=p.priority,
                           ready=p.readiness() is None, problem=p.readiness())
            for p in providers
        ],
    )
