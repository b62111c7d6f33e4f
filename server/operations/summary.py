"""Operational summaries of recorded calls: windows, grouping, percentiles, time series, the previous window.

Two sources, one result:

- **exact**: windows up to ``[operations] exact_window_s`` (1 h by default) whose raw records are all still
  kept read the raw records; percentiles are exact, by linear interpolation between closest ranks
  (Hyndman & Fan 1996, definition 7; numpy's default).
- **histogram**: longer windows (or ones reaching past the roll-up) read the per-minute aggregates, or the
  per-hour ones for windows of 12 h or more (:mod:`server.store.minutes`); counts, tokens and cost are exact,
  percentiles are within 2 % of the exact value (:mod:`server.operations.histogram`), and the window is widened to whole
  minutes (hours), the current one included: ``since``, ``until`` and ``window_s`` say what was covered.

Each result covers the window and the one before it (``previous`` per group), a time series in buckets sized to
the window (at most 60 buckets; only those with calls are listed), the thresholds crossed, incidents and
provider health.
"""

import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import Field

from server.config import AlertsConfig, OperationsConfig, Thresholds
from server.errors import InvalidRequest
from server.operations.histogram import RELATIVE_ERROR, add_value, merge, quantiles
from server.operations.incident_types import Incident
from server.models import DeferredModel
from server.pool.status import ProviderState
from server.store import GROUP_COLUMNS, AggregateRow, CallRow, CallStore, GroupBy

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_WINDOW_S = 366 * 86400
MAX_POINTS = 60
HOURLY_FROM_S = 12 * 3600  # histogram windows this long read per-hour aggregates, shorter ones per-minute
_STEPS_S = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
            604800)
Metric = Literal["calls", "errors", "latency", "throughput", "tokens", "cost", "series", "previous"]
METRICS: tuple[str, ...] = ("calls", "errors", "latency", "throughput", "tokens", "cost", "series", "previous")
_FIELDS: dict[str, tuple[str, ...]] = {
    "calls": ("calls",),
    "errors": ("errors", "error_rate"),
    "latency": ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"),
    "throughput": ("throughput_per_min",),
    "tokens": ("input_tokens", "output_tokens"),
    "cost": ("cost_usd", "cost_per_hour_usd"),
    "series": ("series",),
    "previous": ("previous",),
}


def parse_window(text: str) -> float:
    """``"15m"``, ``"1h"``, ``"24h"``, ``"7d"`` … to seconds.

    Raises:
        InvalidRequest: not of the form NUMBER+UNIT (s, m, h, d, w), zero, or longer than a year.
    """
    match = _WINDOW.match(text or "")
    if not match:
        raise InvalidRequest(f"window {text!r} is not of the form 15m, 1h, 24h, 7d (units s, m, h, d, w)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidRequest(f"window {text!r} must be longer than 0 and at most 366d")
    return seconds


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100) of ascending values, linear interpolation (H&F definition 7); ``None`` if empty."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def series_step_s(window_s: float, *, minimum_s: float = 1) -> int:
    """The time-series bucket for a window: the smallest round step giving at most 60 points."""
    for step in _STEPS_S:
        if step >= minimum_s and window_s / step <= MAX_POINTS:
            return step
    return _STEPS_S[-1]


class SeriesPoint(DeferredModel):
    """One time bucket: ``t`` is its start (Unix seconds); latencies in milliseconds, cost in USD."""

    t: float
    calls: int
    errors: int
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    cost_usd: float = 0.0


class Figures(DeferredModel):
    """Figures of one group over a window. Latencies in milliseconds, cost in USD; ``None`` when not asked for."""

    calls: int | None = None
    errors: int | None = None
    error_rate: float | None = None
    throughput_per_min: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    cost_per_hour_usd: float | None = None


class GroupSummary(Figures):
    """One group's figures over the window, its time series and the previous window's figures."""

    key: str
    series: list[SeriesPoint] | None = None
    previous: Figures | None = None


class Alert(DeferredModel):
    """A threshold crossed by a group in the window."""

    group: str
    metric: str
    value: float
    threshold: float


class OperationsSummary(DeferredModel):
    """The ``monitor_operations`` result."""

    window: str
    window_s: float
    group_by: str
    since: float = Field(description="window start, Unix seconds")
    until: float = Field(description="window end, Unix seconds")
    percentiles: str = Field(description="exact (raw records) or histogram (per-minute, within 2 %)")
    step_s: int = Field(description="time-series bucket, seconds")
    groups: list[GroupSummary]
    totals: GroupSummary = Field(description="every call in the window (key 'all')")
    alerts: list[Alert]
    incidents: list[Incident]
    providers: list[ProviderState]


class _Acc:
    """Running figures of one group (or bucket): raw latencies (exact) or a histogram."""

    __slots__ = ("calls", "errors", "input_tokens", "output_tokens", "cost_usd", "latencies", "histogram")

    def __init__(self, exact: bool) -> None:
        self.calls = self.errors = self.input_tokens = self.output_tokens = 0
        self.cost_usd = 0.0
        self.latencies: list[float] | None = [] if exact else None
        self.histogram: dict[int, int] | None = None if exact else {}

    def add_row(self, row: CallRow) -> None:
        _, _, status, latency_ms, input_tokens, output_tokens, cost_usd = row
        if status == "cancelled":  # early stop, a deadline, the client: not a call the provider failed
            return
        self.calls += 1
        self.errors += status != "ok"
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd
        if self.latencies is not None:
            self.latencies.append(latency_ms)
        else:
            add_value(self.histogram, latency_ms)  # type: ignore[arg-type]

    def add_aggregate(self, row: AggregateRow) -> None:
        self.calls += row.calls
        self.errors += row.errors
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost_usd += row.cost_usd
        merge(self.histogram, row.histogram)  # type: ignore[arg-type]

    def absorb(self, other: "_Acc") -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        if self.latencies is not None:
            self.latencies.extend(other.latencies or ())
        else:
            merge(self.histogram, other.histogram or {})  # type: ignore[arg-type]

    def percentiles(self) -> list[float | None]:
        if self.latencies is not None:
            self.latencies.sort()
            return [_round(percentile(self.latencies, q)) for q in (50, 95, 99)]
        return [_round(v) for v in quantiles(self.histogram or {}, (50, 95, 99))]

    def figures(self, window_s: float) -> Figures:
        p50, p95, p99 = self.percentiles()
        return Figures(
            calls=self.calls, errors=self.errors, error_rate=self.errors / self.calls if self.calls else 0.0,
            throughput_per_min=self.calls / (window_s / 60), latency_p50_ms=p50, latency_p95_ms=p95,
            latency_p99_ms=p99, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            cost_usd=round(self.cost_usd, 10), cost_per_hour_usd=round(self.cost_usd / (window_s / 3600), 10),
        )

    def point(self, t: float) -> SeriesPoint:
        p50, p95, p99 = self.percentiles()
        return SeriesPoint(t=t, calls=self.calls, errors=self.errors,
                           error_rate=self.errors / self.calls if self.calls else 0.0,
                           latency_p50_ms=p50, latency_p95_ms=p95, latency_p99_ms=p99,
                           cost_usd=round(self.cost_usd, 10))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def alerts_for(groups: Sequence[GroupSummary], thresholds: AlertsConfig, group_by: str = "provider") -> list[Alert]:
    """Thresholds a group crosses (grouped by provider, each provider's own thresholds apply)."""
    alerts = []
    for group in groups:
        limits: Thresholds = thresholds.for_provider(group.key) if group_by == "provider" else thresholds
        for metric in ("latency_p95_ms", "error_rate", "cost_per_hour_usd"):
            limit, value = getattr(limits, metric), getattr(group, metric)
            if limit is not None and value is not None and value > limit:
                alerts.append(Alert(group=group.key, metric=metric, value=value, threshold=limit))
    return alerts


async def operations_summary(
    store: CallStore,
    thresholds: AlertsConfig | None = None,
    *,
    window: str = "1h",
    group_by: GroupBy = "provider",
    metrics: Sequence[str] | None = None,
    settings: OperationsConfig | None = None,
    providers: Sequence[ProviderState] = (),
    incidents: Sequence[Incident] = (),
    clock: Callable[[], float] = time.time,
) -> OperationsSummary:
    """Summarise the calls recorded in the last ``window`` (see the module docstring).

    Args:
        metrics: which figures to fill (``calls``, ``errors``, ``latency``, ``throughput``, ``tokens``, ``cost``,
            ``series``, ``previous``); default all. ``calls`` is always filled.

    Raises:
        InvalidRequest: a malformed window, an unknown ``group_by`` or metric.
    """
    window_s = parse_window(window)
    if group_by not in GROUP_COLUMNS:
        raise InvalidRequest(f"cannot group by {group_by!r}; use one of {', '.join(GROUP_COLUMNS)}")
    unknown = [m for m in metrics or () if m not in METRICS]
    if unknown:
        raise InvalidRequest(f"unknown metric(s) {', '.join(map(repr, unknown))}; use some of {', '.join(METRICS)}")
    settings = settings or OperationsConfig()
    thresholds = thresholds or AlertsConfig()
    wanted = set(metrics or METRICS) | {"calls"}
    await store.flush()
    now = clock()
    spans = 2 if "previous" in wanted else 1  # the window, and the one before when asked for
    exact = window_s <= settings.exact_window_s and now - spans * window_s >= await store.rolled_up_before()
    if exact:
        until, since = now, now - window_s
        step = series_step_s(window_s)
        rows = await store.call_rows(until - spans * window_s, until + 1e-6, group_by)
    else:
        period = 3600 if window_s >= HOURLY_FROM_S else 60
        until = math.floor(now / period) * period + period  # the current period included
        since = math.floor((now - window_s) / period) * period
        window_s = until - since
        step = series_step_s(window_s, minimum_s=period)
        aggregates = await store.aggregate_rows(until - spans * window_s, until, group_by, period)
    points = math.ceil(window_s / step)
    current: dict[str, list[_Acc | None]] = {}  # key -> per-bucket accumulators
    previous: dict[str, _Acc] = {}

    def bucket(key: str, ts: float) -> _Acc | None:
        if ts < since:
            acc = previous.get(key)
            if acc is None:
                acc = previous[key] = _Acc(exact)
            return acc
        buckets = current.get(key)
        if buckets is None:
            buckets = current[key] = [None] * points
        index = min(int((ts - since) // step), points - 1)
        acc = buckets[index]
        if acc is None:
            acc = buckets[index] = _Acc(exact)
        return acc

    if exact:
        for row in rows:
            bucket(row[0], row[1]).add_row(row)  # type: ignore[union-attr]
    else:
        for row in aggregates:
            bucket(row.key, row.start).add_aggregate(row)  # type: ignore[union-attr]

    def summarize(key: str, buckets: list[_Acc | None], before: _Acc | None) -> GroupSummary:
        total = _Acc(exact)
        series = []
        for index, acc in enumerate(buckets):
            if acc is None:  # an empty bucket: left out of the series (a point per bucket with calls)
                continue
            series.append(acc.point(since + index * step))
            total.absorb(acc)
        figures = total.figures(window_s).model_dump()
        kept = {f for m in wanted for f in _FIELDS[m]}
        summary = GroupSummary(key=key, **{k: v for k, v in figures.items() if k in kept})
        if "series" in wanted:
            summary.series = series
        if "previous" in wanted:
            prior = (before or _Acc(exact)).figures(window_s).model_dump()
            summary.previous = Figures(**{k: v for k, v in prior.items() if k in kept})
        return summary

    groups = [summarize(key, current.get(key, [None] * points), previous.get(key))
              for key in sorted(set(current) | set(previous)) if key in current or "previous" in wanted]
    all_buckets: list[_Acc | None] = [None] * points
    for buckets in current.values():
        for index, acc in enumerate(buckets):
            if acc is not None:
                if all_buckets[index] is None:
                    all_buckets[index] = _Acc(exact)
                all_buckets[index].absorb(acc)  # type: ignore[union-attr]
    all_previous = _Acc(exact)
    for acc in previous.values():
        all_previous.absorb(acc)
    totals = summarize("all", all_buckets, all_previous)
    return OperationsSummary(
        window=window.strip(), window_s=window_s, group_by=group_by, since=since, until=until,
        percentiles="exact" if exact else f"histogram (relative error at most {RELATIVE_ERROR:.0%})",
        step_s=step, groups=groups, totals=totals, alerts=alerts_for(groups, thresholds, group_by),
        incidents=list(incidents), providers=list(providers),
    )
