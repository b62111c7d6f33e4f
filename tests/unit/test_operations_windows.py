"""Operations figures at scale: histogram error bounds, windows, grouping, series, the previous window, roll-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.config import AlertsConfig, OperationsConfig
from server.errors import InvalidRequest
from server.operations.histogram import RELATIVE_ERROR, add_value, bucket_index, bucket_value, decode, encode, quantiles
from server.operations.summary import operations_summary, percentile, series_step_s
from server.store import CallRecord, CallStore, Store
from server.store.memory import MemoryStore
from server.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
NOW = 1_800_000_000.0  # a minute boundary
HISTOGRAM_ONLY = OperationsConfig(exact_window_s=1)  # every window of a minute or more reads the histograms


def call(ts: float, latency_ms: float, *, provider: str = "p", model: str = "m", tool: str = "orchestrate",
         status: str = "ok", workflow: str | None = None, tokens: tuple[int, int] = (0, 0),
         cost_usd: float = 0.0) -> CallRecord:
    return CallRecord(ts=ts, call_id="c", tool=tool, provider=provider, model=model, status=status,  # type: ignore[arg-type]
                      latency_ms=latency_ms, input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=cost_usd,
                      workflow=workflow)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CallStore]:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "ops.db")
    yield made.calls
    await made.aclose()


def within(estimate: float | None, exact: float | None) -> bool:
    assert estimate is not None and exact is not None
    return abs(estimate - exact) <= RELATIVE_ERROR * abs(exact) * (1 + 1e-9) + 1e-9


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=0.002, max_value=3_600_000, allow_nan=False), min_size=1, max_size=400),
       q=st.floats(min_value=0, max_value=100))
def test_histogram_quantiles_are_within_the_documented_relative_error(values: list[float], q: float) -> None:
    counts: dict[int, int] = {}
    for value in values:
        add_value(counts, value)
    (estimate,) = quantiles(counts, [q])
    assert within(estimate, percentile(sorted(values), q))
    assert decode(encode(counts)) == counts


def test_every_bucket_stands_within_two_percent_of_its_values() -> None:
    for value in (0.0015, 0.7, 1.0, 12.3, 999.9, 1e5, 3.6e6):
        assert abs(bucket_value(bucket_index(value)) - value) <= RELATIVE_ERROR * value * (1 + 1e-9)
    assert bucket_value(bucket_index(0.0)) == 0.0  # cached answers (0 ms) stay 0


@pytest.mark.parametrize(("window_s", "step_s"), [(30, 1), (900, 15), (3600, 60), (86400, 1800), (604800, 10800)])
def test_series_buckets_are_sized_to_the_window(window_s: float, step_s: int) -> None:
    assert series_step_s(window_s) == step_s
    assert window_s / step_s <= 60


async def test_known_data_set_exact_on_raw_records_and_within_error_on_histograms(store: CallStore) -> None:
    # 1 … 10 000 ms, one call each, spread over the last 50 minutes.
    for i in range(10_000):
        store.record_call(call(NOW - 3000 + i * 0.3, float(i + 1)))
    exact = await operations_summary(store, window="1h", clock=lambda: NOW)
    assert exact.percentiles == "exact"
    (group,) = exact.groups
    assert (group.latency_p50_ms, group.latency_p95_ms, group.latency_p99_ms) == (5000.5, 9500.05, 9900.01)
    approx = await operations_summary(store, window="1h", settings=HISTOGRAM_ONLY, clock=lambda: NOW)
    assert approx.percentiles.startswith("histogram")
    (rough,) = approx.groups
    assert rough.calls == 10_000
    for estimate, truth in ((rough.latency_p50_ms, 5000.5), (rough.latency_p95_ms, 9500.05),
                            (rough.latency_p99_ms, 9900.01)):
        assert within(estimate, truth)
    assert rough.latency_p50_ms != 5000.5  # it really came from the histogram


async def test_windows_group_by_each_column_and_compare_with_the_previous_window(store: CallStore) -> None:
    store.record_call(call(NOW - 600, 100, provider="a", model="m1", tool="orchestrate", tokens=(10, 5),
                           cost_usd=0.25))
    store.record_call(call(NOW - 300, 300, provider="a", model="m2", tool="consensus", status="error",
                           workflow="release-notes"))
    store.record_call(call(NOW - 120, 200, provider="b", model="m1", tool="consensus", tokens=(1, 1)))
    store.record_call(call(NOW - 3600 - 60, 50, provider="a", model="m1"))  # the previous hour
    store.record_call(call(NOW - 3 * 86400, 50, provider="c", model="m3"))  # only in 7d
    hour = await operations_summary(store, window="1h", clock=lambda: NOW)
    a, b = hour.groups
    assert (a.key, a.calls, a.errors, a.error_rate) == ("a", 2, 1, 0.5)
    assert (a.input_tokens, a.output_tokens, a.cost_usd, a.cost_per_hour_usd) == (10, 5, 0.25, 0.25)
    assert a.throughput_per_min == pytest.approx(2 / 60)
    assert a.previous is not None and a.previous.calls == 1 and a.previous.latency_p50_ms == 50
    assert (b.key, b.calls, b.previous.calls) == ("b", 1, 0)  # type: ignore[union-attr]
    assert hour.totals.calls == 3 and hour.totals.previous.calls == 1  # type: ignore[union-attr]
    assert sum(p.calls for p in hour.totals.series or []) == 3
    assert [p.t for p in hour.totals.series or []] == [NOW - 600, NOW - 300, NOW - 120]  # no empty buckets
    quarter = await operations_summary(store, window="15m", clock=lambda: NOW)
    assert quarter.step_s == 15 and quarter.totals.calls == 3
    expectations = {"model": {"m1": 2, "m2": 1}, "tool": {"consensus": 2, "orchestrate": 1},
                    "workflow": {"": 2, "release-notes": 1}}
    for column, counts in expectations.items():
        grouped = await operations_summary(store, window="1h", group_by=column, clock=lambda: NOW)  # type: ignore[arg-type]
        assert {g.key: g.calls for g in grouped.groups if g.calls} == counts
    week = await operations_summary(store, window="7d", clock=lambda: NOW)
    assert week.percentiles.startswith("histogram") and week.step_s == 10800
    assert {g.key: g.calls for g in week.groups} == {"a": 3, "b": 1, "c": 1}


async def test_metrics_pick_the_figures_and_bad_input_is_refused(store: CallStore) -> None:
    store.record_call(call(NOW - 60, 10, tokens=(3, 4)))
    only = await operations_summary(store, window="1h", metrics=["latency"], clock=lambda: NOW)
    (group,) = only.groups
    assert group.calls == 1 and group.latency_p95_ms == 10
    assert group.errors is None and group.input_tokens is None and group.series is None and group.previous is None
    for kwargs, message in (({"window": "1y"}, "window"), ({"metrics": ["speed"]}, "unknown metric"),
                            ({"group_by": "user"}, "cannot group by")):
        with pytest.raises(InvalidRequest, match=message):
            await operations_summary(store, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


async def test_thresholds_per_provider_override_the_global_ones(store: CallStore) -> None:
    for i in range(10):
        store.record_call(call(NOW - 60 - i, 2000, provider="slow"))
        store.record_call(call(NOW - 60 - i, 2000, provider="tolerated"))
    thresholds = AlertsConfig(latency_p95_ms=1000, providers={"tolerated": {"latency_p95_ms": 5000}})
    summary = await operations_summary(store, thresholds, window="1h", clock=lambda: NOW)
    assert [(a.group, a.metric) for a in summary.alerts] == [("slow", "latency_p95_ms")]


async def test_roll_up_deletes_old_raw_records_and_preserves_totals(tmp_path: Path) -> None:
    whole = SQLiteStore(tmp_path / "roll.db")
    store = whole.calls
    try:
        for day in range(10):
            for i in range(50):
                store.record_call(call(NOW - day * 86400 - i * 60 - 30, 10.0 * (i + 1), status="error" if i % 10 == 0
                                       else "ok", tokens=(i, 2 * i), cost_usd=0.001 * i))
        before = await operations_summary(store, window="30d", clock=lambda: NOW)
        assert before.totals.calls == 500
        deleted = await store.roll_up(NOW - 7 * 86400)
        assert deleted == 150 and await store.count_calls() == 350
        assert await store.rolled_up_before() == NOW - 7 * 86400
        after = await operations_summary(store, window="30d", clock=lambda: NOW)
        for field in ("calls", "errors", "input_tokens", "output_tokens", "cost_usd", "latency_p50_ms",
                      "latency_p95_ms", "latency_p99_ms"):
            assert getattr(after.totals, field) == pytest.approx(getattr(before.totals, field)), field
        # Windows (with their previous window) inside the raw records stay exact; reaching past the roll-up,
        # the histograms answer.
        long_exact = OperationsConfig(exact_window_s=7 * 86400)
        inside = await operations_summary(store, window="3d", settings=long_exact, clock=lambda: NOW)
        past = await operations_summary(store, window="4d", settings=long_exact, clock=lambda: NOW)
        assert inside.percentiles == "exact" and past.percentiles.startswith("histogram")
    finally:
        await whole.aclose()


async def test_existing_records_are_aggregated_by_the_migration(tmp_path: Path) -> None:
    import sqlite3

    import sqlite_utils

    from server.store.migrations import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    db["_migrations"].create({"name": str, "applied_at": float}, pk="name")
    for name, step in MIGRATIONS:
        if name < "006":
            step(db)
            db["_migrations"].insert({"name": name, "applied_at": 0.0})
    db["calls"].insert_all([{"ts": NOW - 120 + i, "call_id": "x", "tool": "orchestrate", "provider": "p", "model": "m",
                             "status": "ok", "latency_ms": 5.0, "cost_usd": 0.5, "cached": 0} for i in range(3)])
    db.close()
    store = SQLiteStore(path)
    try:
        summary = await operations_summary(store.calls, window="1h", settings=HISTOGRAM_ONLY, clock=lambda: NOW)
        assert summary.totals.calls == 3 and summary.totals.cost_usd == 1.5
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT SUM(calls) FROM call_minutes").fetchone()[0] == 3
