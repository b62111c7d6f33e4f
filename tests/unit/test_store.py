"""Stores: migrations, persistence, totals, flush on close; both implementations answer alike."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.store import CallRecord, Store
from server.store.memory import MemoryStore
from server.store.migrations import MIGRATIONS
from server.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def record(i: int, provider: str = "a", status: str = "ok", ts: float = 1000.0, latency_ms: float = 10.0) -> CallRecord:
    return CallRecord(ts=ts, call_id=f"c{i}", tool="orchestrate", provider=provider, model="m", status=status,
                      latency_ms=latency_ms, error_class=None if status == "ok" else "timeout",
                      input_tokens=3, output_tokens=5, cost_usd=0.001)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    the_store: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield the_store
    await the_store.aclose()


async def test_group_totals_count_and_sort_within_the_window(store: Store) -> None:
    for i, latency in enumerate([30.0, 10.0, 20.0]):
        store.record_call(record(i, "a", ts=1000 + i, latency_ms=latency))
    store.record_call(record(9, "b", status="error", ts=1001, latency_ms=99.0))
    store.record_call(record(10, "a", ts=5000))  # outside the window
    totals = await store.group_totals(999, 2000, "provider")
    assert [(t.key, t.calls, t.errors, t.latencies_ms) for t in totals] == [
        ("a", 3, 0, [10.0, 20.0, 30.0]), ("b", 1, 1, [99.0])]
    assert totals[0].input_tokens == 9 and totals[0].output_tokens == 15
    assert totals[0].cost_usd == pytest.approx(0.003)


async def test_unknown_grouping_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot group by"):
        await store.group_totals(0, 1, "status; DROP TABLE calls")  # type: ignore[arg-type]


async def test_records_queued_before_close_are_all_stored(tmp_path: Path) -> None:
    path = tmp_path / "flush.db"
    store = SQLiteStore(path)
    for i in range(5000):
        store.record_call(record(i))
    await store.aclose()  # no flush before: close must write everything queued
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 5000


async def test_database_survives_reopen_and_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "re.db"
    first = SQLiteStore(path)
    first.record_call(record(1))
    await first.aclose()
    second = SQLiteStore(path)
    assert await second.count_calls() == 1
    await second.aclose()
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _migrations")] == [name for name, _ in MIGRATIONS]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_store_connection_lives_on_one_dedicated_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    # Every read runs on the store's own thread, whichever thread asks.
    names = {await store._submit(lambda db: __import__("threading").current_thread().name) for _ in range(5)}
    await store.aclose()
    assert names == {"sqlite-store"}


async def test_unwritable_path_fails_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        SQLiteStore(blocker / "sub" / "db.sqlite")


async def test_closed_store_refuses_reads_and_drops_writes_without_crashing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    await store.aclose()
    store.record_call(record(1))
    with pytest.raises(RuntimeError, match="closed"):
        await store.flush()


async def test_memory_store_keeps_the_most_recently_used_conversations() -> None:
    # Simple mode keeps conversations in memory and every orchestrate call starts one: the oldest unused go.
    store = MemoryStore(max_conversations=3)
    for name in ("c1", "c2", "c3"):
        store.append_turns(name, [("user", name), ("assistant", "ok")], 1.0, owner="key:a")
    assert await store.load_turns("c1", owner="key:a") == [("user", "c1"), ("assistant", "ok")]  # c1 used again
    store.append_turns("c4", [("user", "c4")], 2.0, owner="key:b")
    assert await store.load_turns("c2") is None  # the least recently used went
    assert [await store.load_turns(c) is not None for c in ("c1", "c3", "c4")] == [True, True, True]
    store.append_turns("c3", [("user", "again")], 3.0, owner="key:other")  # continuing keeps its owner
    assert await store.load_turns("c3", owner="key:other") is None
    assert len(await store.load_turns("c3", owner="key:a")) == 3
    assert set(store.owners) == {"c1", "c3", "c4"}


async def test_memory_store_bounds_raw_calls_and_keeps_them_in_the_aggregates() -> None:
    store = MemoryStore(max_raw_calls=100)
    for i in range(250):
        store.record_call(record(i, ts=1_000_000.0 + i))
    assert 90 <= len(store.calls) <= 100
    assert await store.rolled_up_before() == store.calls[0].ts  # what left the raw list is marked rolled up
    rows = await store.aggregate_rows(0.0, 2_000_000.0, "provider")
    assert sum(row.calls for row in rows) == 250  # every call still counted, per minute
