"""The PostgreSQL store behind the pattern registry and the operations windows (the unit lane's tests of those,
run against a fresh PostgreSQL database each), and what only a shared database shows: two stores on one
database see each other's writes, and concurrent replicas lose none."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.config import PostgresDatabase
from server.store import ApiKeyRecord, CallRecord, PatternRecord, Store

# The behaviour tests written for every store, collected here once more with the `store` fixture below.
from tests.unit.test_knowledge_registry import (  # noqa: F401
    registry,
    test_builtin_library_loads_once_and_yields_to_registered_patterns,
    test_concurrent_updates_get_distinct_versions,
    test_listeners_hear_of_changes_only,
    test_register_creates_version_one_and_identical_content_changes_nothing,
    test_search_falls_back_to_patterns_matching_some_words,
    test_search_filters_by_every_tag_and_ignores_function_words,
    test_search_ranks_name_over_description_over_template,
    test_search_sees_updates_at_once,
    test_search_treats_the_last_word_as_a_prefix_and_lists_without_a_query,
    test_unknown_patterns_and_versions_are_clear_errors,
    test_update_bumps_the_version_and_old_versions_stay_readable,
)
from tests.unit.test_operations_windows import (  # noqa: F401
    test_known_data_set_exact_on_raw_records_and_within_error_on_histograms,
    test_metrics_pick_the_figures_and_bad_input_is_refused,
    test_thresholds_per_provider_override_the_global_ones,
    test_windows_group_by_each_column_and_compare_with_the_previous_window,
)

pytestmark = pytest.mark.anyio


def open_postgres(url: str) -> Store:
    from server.store.postgres import PostgresStore

    return PostgresStore(PostgresDatabase(url))


@pytest.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[Store]:
    made = open_postgres(postgres_url)
    yield made
    await made.aclose()


@pytest.fixture
def store(request: pytest.FixtureRequest, postgres_store: Store):
    """The registry tests take the whole store, the operations-window tests its call store."""
    return postgres_store.calls if "operations_windows" in request.function.__module__ else postgres_store


def call(i: int, provider: str, ts: float) -> CallRecord:
    return CallRecord(ts=ts, call_id=f"c{i}", tool="orchestrate", provider=provider, model="m", status="ok",
                      latency_ms=10.0 + i, input_tokens=1, output_tokens=2, cost_usd=0.25)


async def test_two_stores_on_one_database_share_every_kind_of_state(postgres_url: str) -> None:
    a, b = open_postgres(postgres_url), open_postgres(postgres_url)
    try:
        for i in range(50):
            (a if i % 2 else b).calls.record_call(call(i, "p", 1000.0 + i))
        await a.conversations.append_turns("conv-1", [("user", "hi"), ("assistant", "hello")], 5.0, owner="alice")
        await b.conversations.append_turns("conv-1", [("user", "again")], 6.0, owner="alice")
        await a.calls.flush()
        await b.calls.flush()
        stored, changed = await a.patterns.put_pattern(PatternRecord("greet", 0, "Greets", "Hello {{ who }}",
                                                                     updated_at=1.0))
        await b.keys.put_api_key(ApiKeyRecord("k1", "alice", "user", "h" * 64, "aiom_k1", 1.0))
        await a.incidents.put_incident({"id": "inc-1", "opened_at": 7.0, "status": "open", "metric": "error_rate"})

        assert (stored.version, changed) == (1, True)
        assert (await b.patterns.get_pattern("greet")).template == "Hello {{ who }}"
        assert await b.conversations.load_turns("conv-1", owner="alice") == [
            ("user", "hi"), ("assistant", "hello"), ("user", "again")]
        assert await a.conversations.load_turns("conv-1", owner="bob") is None
        assert (await a.keys.api_key_by_hash("h" * 64)).name == "alice"
        assert [i["id"] for i in await b.incidents.list_incidents(active_only=True)] == ["inc-1"]
        # Both replicas' records add up in the shared aggregates (row locks: no lost update).
        minutes = await b.calls.aggregate_rows(0, 10_000, "provider")
        assert sum(row.calls for row in minutes) == 50
        assert await a.calls.cost_by_provider(0) == {"p": pytest.approx(12.5)}
    finally:
        await a.aclose()
        await b.aclose()


async def test_concurrent_replicas_appending_to_one_conversation_lose_no_turn(postgres_url: str) -> None:
    import anyio

    stores = [open_postgres(postgres_url) for _ in range(3)]
    try:
        await stores[0].conversations.append_turns("c", [("user", "start")], 1.0)
        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(stores[n % 3].conversations.append_turns, "c", [("user", f"t{n}")], 2.0)
        turns = await stores[1].conversations.load_turns("c")
        assert len(turns) == 21 and {t for _, t in turns} == {"start", *(f"t{n}" for n in range(20))}
    finally:
        for s in stores:
            await s.aclose()


async def test_migrations_run_once_when_replicas_open_together(postgres_url: str) -> None:
    import psycopg

    stores = [open_postgres(postgres_url) for _ in range(2)]
    for s in stores:
        await s.aclose()
    with psycopg.connect(postgres_url) as connection:
        names = [n for (n,) in connection.execute("SELECT name FROM _migrations ORDER BY name")]
    from server.store.postgres_schema import MIGRATIONS

    assert names == [name for name, _ in MIGRATIONS]
