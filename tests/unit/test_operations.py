"""Operations summaries: window parsing, exact percentiles, grouping, alerts."""

from __future__ import annotations

import random
import statistics

import pytest

from server.config import AlertsConfig
from server.errors import InvalidRequest
from server.operations.summary import operations_summary, parse_window, percentile
from server.store import CallRecord
from server.store.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("1h", 3600), ("24h", 86400), ("7d", 604800),
                                               ("30s", 30), (" 2h ", 7200), ("1.5h", 5400)])
def test_windows_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "-1h", "0m", "1y", "400d", "1h30m"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="window"):
        parse_window(text)


def test_percentiles_match_the_inclusive_definition() -> None:
    rng = random.Random(7)
    values = sorted(rng.uniform(1, 500) for _ in range(1001))
    # statistics.quantiles(method="inclusive") is H&F definition 7 too: an independent reference.
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (50, 95, 99):
        assert percentile(values, q) == pytest.approx(cuts[q - 1])
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0


async def test_summary_counts_groups_and_alerts() -> None:
    now = 10_000.0
    store = MemoryStore()
    for i in range(20):
        store.calls.record_call(CallRecord(ts=now - 60 - i, call_id=str(i), tool="orchestrate", provider="fast",
                                     model="m1", status="ok", latency_ms=float(i + 1), input_tokens=2,
                                     output_tokens=3, cost_usd=0.5))
    for i in range(4):
        store.calls.record_call(CallRecord(ts=now - 10, call_id=f"s{i}", tool="orchestrate", provider="slow", model="m2",
                                     status="error" if i % 2 else "ok", latency_ms=8000.0))
    store.calls.record_call(CallRecord(ts=now - 7200, call_id="old", tool="orchestrate", provider="fast", model="m1",
                                 status="error", latency_ms=1.0))
    summary = await operations_summary(store.calls, AlertsConfig(latency_p95_ms=5000, error_rate=0.25),
                                       window="1h", clock=lambda: now)
    fast, slow = summary.groups
    assert (fast.key, fast.calls, fast.errors, fast.error_rate) == ("fast", 20, 0, 0.0)
    assert fast.latency_p50_ms == pytest.approx(10.5)
    assert fast.latency_p95_ms == pytest.approx(19.05)
    assert fast.cost_usd == pytest.approx(10.0) and fast.input_tokens == 40
    assert fast.throughput_per_min == pytest.approx(20 / 60)
    assert (slow.calls, slow.errors, slow.error_rate) == (4, 2, 0.5)
    assert {(a.group, a.metric) for a in summary.alerts} == {("slow", "latency_p95_ms"), ("slow", "error_rate")}
    by_model = await operations_summary(store.calls, AlertsConfig(), window="1h", group_by="model", clock=lambda: now)
    assert [g.key for g in by_model.groups] == ["m1", "m2"]
