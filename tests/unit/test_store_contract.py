"""The store contract: every implementation of every store protocol (``server/store/protocols.py``) answers alike.

Runs against each backend of ``tests/store_backends.py`` (SQLite in a temporary file, in memory, simple mode's
JSON-file store); add a backend there, or override the ``backend`` fixture in a module that imports these tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from server.store import (
    ApiKeyRecord,
    AuditEntry,
    CallRecord,
    GuardrailDecision,
    PatternRecord,
    StorageError,
    Store,
    WorkflowRun,
)
from tests.store_backends import BACKENDS, PARTS, Backend

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture
async def store(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await backend.open(request, tmp_path)
    yield opened
    await opened.aclose()


def call(i: int, provider: str = "a", status: str = "ok", ts: float = 1000.0, latency_ms: float = 10.0,
         cost_usd: float = 0.001) -> CallRecord:
    return CallRecord(ts=ts, call_id=f"c{i}", tool="orchestrate", provider=provider, model="m", status=status,  # type: ignore[arg-type]
                      latency_ms=latency_ms, error_class=None if status == "ok" else "timeout",
                      input_tokens=3, output_tokens=5, cost_usd=cost_usd)


def pattern(name: str = "greet", template: str = "Hello {{ who }}", *, source: str = "registered",
            description: str = "Greets someone", tags: tuple[str, ...] = ("hello",), ts: float = 10.0) -> PatternRecord:
    return PatternRecord(name=name, version=0, description=description, template=template,
                         variables=({"name": "who", "description": "", "required": True, "default": None},),
                         metadata={"tags": list(tags)}, tags=tags, source=source, created_at=ts, updated_at=ts)


def run(run_id: str, created_at: float, owner: str | None = "key:a", **fields: object) -> WorkflowRun:
    return WorkflowRun(run_id=run_id, workflow="w", fingerprint="f" * 64, created_at=created_at, owner=owner,
                       **fields)  # type: ignore[arg-type]


# -- calls and metrics ---------------------------------------------------------------------------------------


async def test_group_totals_count_and_sort_within_the_window(store: Store) -> None:
    for i, latency in enumerate([30.0, 10.0, 20.0]):
        store.calls.record_call(call(i, "a", ts=1000 + i, latency_ms=latency))
    store.calls.record_call(call(9, "b", status="error", ts=1001, latency_ms=99.0))
    store.calls.record_call(call(10, "a", ts=5000))  # outside the window
    await store.calls.flush()
    totals = await store.calls.group_totals(999, 2000, "provider")
    assert [(t.key, t.calls, t.errors, t.latencies_ms) for t in totals] == [
        ("a", 3, 0, [10.0, 20.0, 30.0]), ("b", 1, 1, [99.0])]
    assert totals[0].input_tokens == 9 and totals[0].output_tokens == 15
    assert totals[0].cost_usd == pytest.approx(0.003)
    rows = await store.calls.call_rows(999, 2000, "provider")
    assert sorted((key, ts, status) for key, ts, status, *_ in rows) == [
        ("a", 1000, "ok"), ("a", 1001, "ok"), ("a", 1002, "ok"), ("b", 1001, "error")]


async def test_an_unknown_grouping_or_period_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot group by"):
        await store.calls.group_totals(0, 1, "status; DROP TABLE calls")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot group by"):
        await store.calls.call_rows(0, 1, "nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no aggregates per 7 s"):
        await store.calls.aggregate_rows(0, 1, "provider", 7)


async def test_spend_per_provider_counts_from_a_time_on(store: Store) -> None:
    store.calls.record_call(call(1, "a", ts=100, cost_usd=0.5))
    store.calls.record_call(call(2, "a", ts=200, cost_usd=0.25))
    store.calls.record_call(call(3, "b", ts=200, cost_usd=0.0))
    await store.calls.flush()
    assert await store.calls.cost_by_provider(150) == {"a": pytest.approx(0.25)}


async def test_aggregates_add_up_per_minute_and_hour_and_survive_a_roll_up(store: Store) -> None:
    for i in range(6):  # two minutes of one hour, and one call an hour later
        store.calls.record_call(call(i, ts=3600 * 10 + 30 * i, latency_ms=10.0 * (i + 1)))
    store.calls.record_call(call(9, ts=3600 * 11 + 5))
    await store.calls.flush()
    minutes = await store.calls.aggregate_rows(0, 10**6, "provider", 60)
    assert sorted((row.start, row.calls) for row in minutes) == [(36000, 2), (36060, 2), (36120, 2), (39600, 1)]
    hours = await store.calls.aggregate_rows(0, 10**6, "provider", 3600)
    assert sorted((row.start, row.calls, row.key) for row in hours) == [(36000, 6, "a"), (39600, 1, "a")]
    assert await store.calls.rolled_up_before() == 0
    assert await store.calls.roll_up(3600 * 11) == 6
    assert await store.calls.rolled_up_before() == 3600 * 11
    assert [ts for _, ts, *_ in await store.calls.call_rows(0, 10**6, "provider")] == [3600 * 11 + 5]
    assert sum(row.calls for row in await store.calls.aggregate_rows(0, 10**6, "provider", 3600)) == 7


# -- guardrail decisions -------------------------------------------------------------------------------------


async def test_guardrail_decisions_are_kept_in_order(store: Store) -> None:
    for i, action in enumerate(("allow", "redact", "block")):
        store.guardrails.record_guardrail(GuardrailDecision(ts=10.0 + i, tool="orchestrate", principal="key:a",
                                                            stage="input", action=action, rule=f"r{i}"))  # type: ignore[arg-type]
    await store.calls.flush()
    decisions = await store.guardrails.list_guardrail_decisions(since_ts=11.0)
    assert [(d.action, d.rule, d.principal) for d in decisions] == [("redact", "r1", "key:a"), ("block", "r2", "key:a")]
    assert len(await store.guardrails.list_guardrail_decisions(limit=1)) == 1


# -- conversations and the response cache --------------------------------------------------------------------


async def test_conversations_are_found_by_their_owner_only(store: Store) -> None:
    assert await store.conversations.load_turns("c1") is None
    await store.conversations.append_turns("c1", [("user", "hi"), ("assistant", "hello")], 1.0, owner="key:a")
    await store.conversations.append_turns("c1", [("user", "again")], 2.0, owner="key:b")  # keeps its owner
    assert await store.conversations.load_turns("c1", owner="key:a") == [
        ("user", "hi"), ("assistant", "hello"), ("user", "again")]
    assert await store.conversations.load_turns("c1", owner="key:b") is None  # like an unknown id
    assert len(await store.conversations.load_turns("c1") or []) == 3  # no owner filter: an admin


async def test_one_bad_turn_among_concurrent_appends_fails_alone(store: Store) -> None:
    outcomes: dict[int, object] = {}

    async def append(i: int) -> None:
        text = "bad \ud800 reply" if i == 7 else f"answer {i}"
        try:
            await store.conversations.append_turns(f"conv-{i}", [("user", f"q{i}"), ("assistant", text)], 1.0)
            outcomes[i] = "stored"
        except StorageError as exc:
            outcomes[i] = exc

    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(append, i)
    for i in range(20):
        if i != 7:
            assert outcomes[i] == "stored"
            assert await store.conversations.load_turns(f"conv-{i}") == [("user", f"q{i}"), ("assistant", f"answer {i}")]
    bad = outcomes[7]
    if isinstance(bad, StorageError):  # refused: then nothing of it is kept
        assert bad.condition == "invalid text" and await store.conversations.load_turns("conv-7") is None
    else:  # kept as given
        assert await store.conversations.load_turns("conv-7") == [("user", "q7"), ("assistant", "bad \ud800 reply")]


async def test_cache_entries_answer_within_their_time_and_are_replaced(store: Store) -> None:
    entry = {"provider": "p", "model": "m", "text": "t", "input_tokens": 1, "output_tokens": 2}
    store.cache.cache_put("k", entry, 100.0)
    await store.calls.flush()
    assert await store.cache.cache_get("k", 50.0) == entry
    assert await store.cache.cache_get("k", 150.0) is None  # older than asked
    assert await store.cache.cache_get("other", 0.0) is None
    store.cache.cache_put("k", {**entry, "text": "newer"}, 200.0)
    await store.calls.flush()
    assert (await store.cache.cache_get("k", 150.0) or {})["text"] == "newer"


# -- patterns and saved workflows ----------------------------------------------------------------------------


async def test_pattern_versions_are_kept_and_identical_content_stores_nothing(store: Store) -> None:
    first, stored = await store.patterns.put_pattern(pattern(ts=10.0))
    assert (first.version, stored, first.created_at) == (1, True, 10.0)
    same, stored = await store.patterns.put_pattern(pattern(ts=20.0))
    assert (same.version, stored) == (1, False)
    second, stored = await store.patterns.put_pattern(pattern(template="Hi {{ who }}", ts=30.0))
    assert (second.version, stored, second.created_at, second.updated_at) == (2, True, 10.0, 30.0)
    assert await store.patterns.pattern_versions("greet") == [1, 2]
    assert (await store.patterns.get_pattern("greet", 1)).template == "Hello {{ who }}"
    assert await store.patterns.get_pattern("greet") == second
    assert await store.patterns.get_pattern("greet", 3) is None and await store.patterns.get_pattern("nope") is None
    assert await store.patterns.pattern_versions("nope") == []


async def test_a_registered_pattern_overrides_the_library(store: Store) -> None:
    await store.patterns.put_pattern(pattern(template="Mine {{ who }}"))
    kept, stored = await store.patterns.put_pattern(pattern(template="Shipped {{ who }}", source="builtin"),
                                                    keep_registered=True)
    assert not stored and kept.template == "Mine {{ who }}"
    await store.patterns.put_pattern(pattern("lib", source="builtin"))
    updated, stored = await store.patterns.put_pattern(pattern("lib", "New {{ who }}", source="builtin"),
                                                       keep_registered=True)
    assert stored and updated.version == 2


async def test_patterns_are_listed_named_and_searched(store: Store) -> None:
    await store.patterns.put_pattern(pattern("code-review", "Review {{ who }}", description="Reviews a diff",
                                             tags=("code",)))
    await store.patterns.put_pattern(pattern("commit-message", "Write {{ who }}", description="Writes a commit "
                                             "message for a diff", tags=("git",)))
    await store.patterns.put_pattern(pattern("greeting", description="Says hello"))
    assert [p.name for p in await store.patterns.list_patterns()] == ["code-review", "commit-message", "greeting"]
    assert await store.patterns.pattern_names("co", 10) == ["code-review", "commit-message"]
    assert await store.patterns.pattern_names("co", 1) == ["code-review"]
    hits = await store.patterns.search_patterns(["diff"], [], 10)
    assert {p.name for p, _ in hits} == {"code-review", "commit-message"}
    assert all(score > 0 for _, score in hits)
    assert [p.name for p, _ in await store.patterns.search_patterns(["diff"], ["git"], 10)] == ["commit-message"]
    assert [p.name for p, _ in await store.patterns.search_patterns(["revie"], [], 10)] == ["code-review"]  # typing
    assert [p.name for p, _ in await store.patterns.search_patterns([], ["code"], 10)] == ["code-review"]
    assert await store.patterns.search_patterns(["zanzibar"], [], 10) == []


async def test_saved_workflows_get_a_version_per_change(store: Store) -> None:
    definition = {"name": "nightly", "steps": [{"id": "a", "kind": "pattern", "with": {"pattern": "p"}}]}
    first, stored = await store.workflows.put_workflow("nightly", definition, 10.0)
    assert (first.version, stored, first.definition) == (1, True, definition)
    assert (await store.workflows.put_workflow("nightly", definition, 11.0))[1] is False
    changed = {**definition, "description": "now described"}
    second, stored = await store.workflows.put_workflow("nightly", changed, 12.0)
    assert (second.version, stored, second.created_at, second.updated_at) == (2, True, 10.0, 12.0)
    await store.workflows.put_workflow("a-first", definition, 13.0)
    assert await store.workflows.get_workflow("nightly") == second
    assert await store.workflows.get_workflow("nope") is None
    assert [w.name for w in await store.workflows.list_workflows()] == ["a-first", "nightly"]


# -- agents --------------------------------------------------------------------------------------------------


async def test_agent_versions_are_kept_and_identical_content_stores_nothing(store: Store) -> None:
    spec = {"description": "Reviews code", "system_prompt": "You review code.", "capabilities": ["code"],
            "providers": ["a"], "tools": ["github.comment"], "metadata": {"team": "é"}}
    first, stored = await store.agents.put_agent("reviewer", spec, 10.0)
    assert (first.name, first.version, stored, first.spec, first.created_at) == ("reviewer", 1, True, spec, 10.0)
    same, stored = await store.agents.put_agent("reviewer", dict(reversed(list(spec.items()))), 20.0)  # key order
    assert (same.version, stored, same.updated_at) == (1, False, 10.0)
    changed = {**spec, "capabilities": ["code", "review"]}
    second, stored = await store.agents.put_agent("reviewer", changed, 30.0)
    assert (second.version, stored, second.created_at, second.updated_at) == (2, True, 10.0, 30.0)
    assert await store.agents.get_agent("reviewer") == second
    assert (await store.agents.get_agent("reviewer", 1)).spec == spec
    assert await store.agents.get_agent("reviewer", 3) is None and await store.agents.get_agent("nope") is None
    await store.agents.put_agent("analyst", {"description": "Analyses data"}, 40.0)
    assert [(a.name, a.version) for a in await store.agents.list_agents()] == [("analyst", 1), ("reviewer", 2)]


async def test_an_agent_versions_source_is_kept_and_a_new_source_is_a_new_version(store: Store) -> None:
    spec = {"description": "Runs operations"}
    first, _ = await store.agents.put_agent("ops", spec, 1.0, source="config")
    same, stored = await store.agents.put_agent("ops", spec, 2.0, source="config")
    assert (first.source, same.version, stored) == ("config", 1, False)
    registered, stored = await store.agents.put_agent("ops", spec, 3.0)  # same spec, now from register_agent
    assert (registered.version, registered.source, stored) == (2, "registered", True)
    assert [(a.name, a.source) for a in await store.agents.list_agents()] == [("ops", "registered")]
    assert (await store.agents.get_agent("ops", 1)).source == "config"


async def test_concurrent_changes_to_one_agent_get_distinct_versions(store: Store) -> None:
    async def put(i: int) -> None:
        await store.agents.put_agent("busy", {"description": f"version {i}"}, float(i))

    async with anyio.create_task_group() as group:
        for i in range(8):
            group.start_soon(put, i)
    current = await store.agents.get_agent("busy")
    assert current is not None and current.version == 8
    kept = [await store.agents.get_agent("busy", v) for v in range(1, 9)]
    assert sorted(a.spec["description"] for a in kept if a is not None) == [f"version {i}" for i in range(8)]


# -- runs ------------------------------------------------------------------------------------------------------


async def test_a_run_id_is_created_once(store: Store) -> None:
    created, new = await store.runs.create_run(run("r1", 10.0, workflow_version=3, steps=4, deadline_at=99.0))
    assert new and created.updated_at == 10.0 and created.status == "pending"
    assert await store.runs.get_run("r1") == created
    again, new = await store.runs.create_run(run("r1", 20.0, owner="key:b"))
    assert not new and again == created  # the first record stands
    assert await store.runs.get_run("r2") is None
    wins: list[bool] = []

    async def race(owner: str) -> None:
        wins.append((await store.runs.create_run(run("contested", 30.0, owner=owner)))[1])

    async with anyio.create_task_group() as group:
        for i in range(10):
            group.start_soon(race, f"key:{i}")
    assert sorted(wins) == [False] * 9 + [True]


async def test_runs_are_listed_newest_first_by_owner_and_status_in_pages(store: Store) -> None:
    for i in range(12):
        await store.runs.create_run(run(f"r{i:02d}", 100.0 + i, owner="key:a" if i % 3 else "key:b"))
    await store.runs.create_run(run("anonymous", 200.0, owner=None))
    await store.runs.set_run_status("r01", "running", 300.0)
    await store.runs.set_run_status("r04", "completed", 300.0)
    every = await store.runs.list_runs(limit=100)
    assert [r.run_id for r in every][:3] == ["anonymous", "r11", "r10"] and len(every) == 13
    mine = await store.runs.list_runs(owner="key:a", limit=100)
    assert [r.run_id for r in mine] == ["r11", "r10", "r08", "r07", "r05", "r04", "r02", "r01"]
    assert [r.run_id for r in await store.runs.list_runs(owner="key:a", limit=3, offset=3)] == ["r07", "r05", "r04"]
    assert [r.run_id for r in await store.runs.list_runs(owner="key:a", status=["running", "completed"])] == [
        "r04", "r01"]
    assert [r.run_id for r in await store.runs.list_runs(status=["pending"], owner="key:b")] == [
        "r09", "r06", "r03", "r00"]
    assert await store.runs.list_runs(owner="key:nobody") == []


async def test_a_finished_run_keeps_its_status(store: Store) -> None:
    await store.runs.create_run(run("r", 10.0))
    assert await store.runs.set_run_status("r", "running", 11.0)
    assert await store.runs.set_run_status("r", "failed", 12.0, error="step a failed")
    assert not await store.runs.set_run_status("r", "completed", 13.0)
    stored = await store.runs.get_run("r")
    assert (stored.status, stored.updated_at, stored.error, stored.finished) == ("failed", 12.0, "step a failed", True)
    assert await store.runs.set_run_status("r", "cancelled", 14.0, if_unfinished=False)
    assert (await store.runs.get_run("r")).status == "cancelled"
    assert not await store.runs.set_run_status("unknown", "running", 15.0)


# -- incidents and keys ----------------------------------------------------------------------------------------


async def test_incidents_are_replaced_whole_and_listed_newest_first(store: Store) -> None:
    for i in range(3):
        await store.incidents.put_incident({"id": f"i{i}", "opened_at": 10.0 + i, "status": "open", "value": i})
    await store.incidents.put_incident({"id": "i1", "opened_at": 11.0, "status": "resolved", "value": 9})
    assert await store.incidents.get_incident("i1") == {"id": "i1", "opened_at": 11.0, "status": "resolved",
                                                       "value": 9}
    assert await store.incidents.get_incident("nope") is None
    assert [i["id"] for i in await store.incidents.list_incidents()] == ["i2", "i1", "i0"]
    assert [i["id"] for i in await store.incidents.list_incidents(active_only=True)] == ["i2", "i0"]
    assert [i["id"] for i in await store.incidents.list_incidents(limit=1)] == ["i2"]


async def test_keys_are_found_by_hash_listed_and_revoked_once(store: Store) -> None:
    older = ApiKeyRecord(id="k1", name="ada", role="admin", key_hash="h1", prefix="aiom_k1", created_at=1.0)
    newer = ApiKeyRecord(id="k2", name="bob", role="user", key_hash="h2", prefix="aiom_k2", created_at=2.0,
                         expires_at=100.0)
    await store.keys.put_api_key(newer)
    await store.keys.put_api_key(older)
    assert await store.keys.api_key_by_hash("h2") == newer and await store.keys.api_key_by_hash("h3") is None
    assert [k.id for k in await store.keys.list_api_keys()] == ["k1", "k2"]
    assert await store.keys.revoke_api_key("k2", 50.0)
    assert not await store.keys.revoke_api_key("k2", 60.0) and not await store.keys.revoke_api_key("k9", 60.0)
    assert (await store.keys.api_key_by_hash("h2")).revoked_at == 50.0
    with pytest.raises(StorageError) as raised:
        await store.keys.put_api_key(dataclasses.replace(older, id="k3"))  # the same key hash
    assert raised.value.condition == "conflict"
    assert [k.id for k in await store.keys.list_api_keys()] == ["k1", "k2"]


# -- durability ------------------------------------------------------------------------------------------------


def entry(id: str, ts: float, subject: str = "run-1", **fields: object) -> AuditEntry:
    return AuditEntry(id=id, ts=ts, actor="key:a", action="step.finished", subject=subject, **fields)  # type: ignore[arg-type]


async def test_the_audit_trail_appends_each_fact_once_in_order(store: Store) -> None:
    first = entry("run:1:step:a", 10.0, step="a", input_sha256="1" * 64, output_sha256="2" * 64,
                  detail={"provider": "p", "model": "m", "n": [1, 2]}, content={"inputs": {"x": "é"}})
    assert await store.audit.append_audit([first, entry("run:1:finished", 12.0), entry("other", 11.0, "run-2")]) == 3
    replayed = dataclasses.replace(first, ts=99.0, actor="someone else", detail={})
    assert await store.audit.append_audit([replayed, entry("run:1:later", 13.0)]) == 1  # the first entry stays
    assert await store.audit.append_audit([]) == 0
    of_run = await store.audit.audit_of("run-1")
    assert [e.id for e in of_run] == ["run:1:step:a", "run:1:finished", "run:1:later"]
    kept = of_run[0]
    assert (kept.ts, kept.actor, kept.step, kept.detail, kept.content) == (
        10.0, "key:a", "a", {"provider": "p", "model": "m", "n": [1, 2]}, {"inputs": {"x": "é"}})
    assert (kept.input_sha256, kept.output_sha256) == ("1" * 64, "2" * 64)
    assert of_run[1].content is None and of_run[1].detail == {}
    seqs = [e.seq for e in await store.audit.audit_since(0.0)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4 and seqs[0] > 0  # the append order
    assert [e.id for e in await store.audit.audit_since(11.5)] == ["run:1:finished", "run:1:later"]
    page = await store.audit.audit_since(0.0, limit=2)
    rest = await store.audit.audit_since(0.0, after_seq=page[-1].seq, limit=10)
    assert [e.id for e in page + rest] == ["run:1:step:a", "run:1:finished", "other", "run:1:later"]
    assert await store.audit.audit_of("run-1", limit=1) == of_run[:1]


async def test_retention_is_the_only_deletion_of_the_audit_trail(store: Store) -> None:
    await store.audit.append_audit([entry("old", 5.0), entry("new", 50.0)])
    assert await store.audit.purge_audit(10.0) == 1
    assert [e.id for e in await store.audit.audit_since(0.0)] == ["new"]
    assert not hasattr(store.audit, "update_audit") and not hasattr(store.audit, "delete_audit")


async def test_what_a_backend_keeps_survives_a_reopen_and_nothing_else(backend: Backend,
                                                                         request: pytest.FixtureRequest,
                                                                         tmp_path: Path) -> None:
    store = await backend.open(request, tmp_path)
    store.calls.record_call(call(1))
    store.guardrails.record_guardrail(GuardrailDecision(ts=1.0, tool="t", principal="p", stage="input",
                                                        action="allow", rule="r"))
    store.cache.cache_put("k", {"provider": "p", "model": "m", "text": "t", "input_tokens": 1, "output_tokens": 1},
                          1.0)
    await store.conversations.append_turns("c", [("user", "hi")], 1.0)
    await store.patterns.put_pattern(pattern())
    await store.workflows.put_workflow("w", {"name": "w", "steps": []}, 1.0)
    await store.runs.create_run(run("r", 1.0))
    await store.incidents.put_incident({"id": "i", "opened_at": 1.0, "status": "open"})
    await store.keys.put_api_key(ApiKeyRecord(id="k", name="n", role="user", key_hash="h", prefix="p",
                                              created_at=1.0))
    await store.audit.append_audit([entry("e", 1.0)])
    await store.agents.put_agent("a", {"description": "d"}, 1.0)
    await store.aclose()  # queued writes are flushed here
    reopened = await backend.open(request, tmp_path)
    try:
        found = {
            "calls": len(await reopened.calls.call_rows(0, 10**6, "provider")) == 1,
            "guardrails": len(await reopened.guardrails.list_guardrail_decisions()) == 1,
            "cache": await reopened.cache.cache_get("k", 0.0) is not None,
            "conversations": await reopened.conversations.load_turns("c") == [("user", "hi")],
            "patterns": await reopened.patterns.get_pattern("greet") is not None,
            "workflows": await reopened.workflows.get_workflow("w") is not None,
            "runs": await reopened.runs.get_run("r") is not None,
            "incidents": await reopened.incidents.get_incident("i") is not None,
            "keys": await reopened.keys.api_key_by_hash("h") is not None,
            "audit": [e.id for e in await reopened.audit.audit_of("run-1")] == ["e"],
            "agents": await reopened.agents.get_agent("a") is not None,
        }
    finally:
        await reopened.aclose()
    assert set(found) == PARTS
    assert {part for part, kept in found.items() if kept} == backend.persistent
