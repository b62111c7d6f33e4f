"""Two replicas on one PostgreSQL database, each with its own store, pool and MCP server (in this process, the
workflow runtime in memory): what one does, the other sees and hears."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server, open_dependencies, open_store
from server.config import Config, PostgresDatabase
from server.dependencies import Dependencies
from server.simulator import Upstream
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio


def team_config(upstream: Upstream, **sections: Any) -> Config:
    return config_for(provider_entry(upstream, "primary", kind="openai", model="gpt-sim",
                                     input_cost_per_mtok=100_000.0, output_cost_per_mtok=100_000.0),
                      workflows={"runtime": "memory"}, **sections)


@asynccontextmanager
async def replica(config: Config, url: str) -> AsyncIterator[tuple[Client, Dependencies]]:
    """One replica: its dependencies on the shared database, its MCP server, a 2026-07-28 client."""
    async with AsyncExitStack() as stack:
        deps = await stack.enter_async_context(open_dependencies(
            config, store_factory=lambda: open_store(PostgresDatabase(url))))
        server = build_server(config, store_factory=lambda: deps.store, shared=deps)
        client = await stack.enter_async_context(Client(server))
        yield client, deps


async def tool(client: Client, tool_name: str, **arguments: Any) -> dict:
    result = await client.call_tool(tool_name, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_a_pattern_registered_on_one_replica_renders_on_the_other_and_its_listeners_hear_it(
        upstream: Upstream, postgres_url: str) -> None:
    config = team_config(upstream)
    async with replica(config, postgres_url) as (a, _), replica(config, postgres_url) as (b, _):
        events: list[Any] = []
        async with b.listen(prompts_list_changed=True, resource_subscriptions=["knowledge://patterns/team-greet"]
                            ) as stream:
            await tool(a, "register_pattern", name="team-greet", description="Greets a team",
                       template="Hello {{ team }}")
            with anyio.fail_after(10):
                async for event in stream:
                    events.append(event)
                    if len(events) == 2:
                        break
        rendered = await b.get_prompt("team-greet", {"team": "platform"})
        prompts = [p.name for p in (await b.list_prompts()).prompts]
    assert rendered.messages[0].content.text == "Hello platform"
    assert "team-greet" in prompts  # B's prompt list followed A's registration
    assert sorted(type(e).__name__ for e in events) == ["PromptsListChanged", "ResourceUpdated"]


async def test_a_conversation_started_on_one_replica_continues_on_the_other(
        upstream: Upstream, postgres_url: str) -> None:
    config = team_config(upstream)
    async with replica(config, postgres_url) as (a, deps_a), replica(config, postgres_url) as (b, _):
        first = await tool(a, "orchestrate", prompt="first question")
        
        second = await tool(b, "orchestrate", prompt="second question", continuation_id=first["continuation_id"])
    assert second["continuation_id"] == first["continuation_id"]
    sent = upstream.requests[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["first question", "second question"]


async def test_spend_from_both_replicas_counts_once_against_one_daily_budget(
        upstream: Upstream, postgres_url: str) -> None:
    probe = team_config(upstream)
    async with replica(probe, postgres_url) as (a, deps):
        cost = (await tool(a, "orchestrate", prompt="price one call"))["cost_usd"]
        await deps.store.calls.flush()
    assert cost > 0
    config = team_config(upstream, routing={"daily_budget_usd": cost * 4.5})  # the probe + 4 more calls fit
    answered = refused = 0
    async with replica(config, postgres_url) as (a, deps_a), replica(config, postgres_url) as (b, deps_b):
        for n in range(10):
            client, deps = (a, deps_a) if n % 2 else (b, deps_b)
            result = await client.call_tool("orchestrate", {"prompt": "price one call"})
            if result.is_error:
                assert "daily budget" in result.content[0].text
                refused += 1
            else:
                answered += 1
            await deps.store.calls.flush()
    assert (answered, refused) == (4, 6)  # each replica alone would have answered 4 (8 in all)


async def test_one_threshold_crossing_opens_exactly_one_incident(upstream: Upstream, postgres_url: str) -> None:
    config = team_config(upstream, alerts={"error_rate": 0.1, "min_calls": 3, "interval_s": 1})
    from server.store import CallRecord

    async with replica(config, postgres_url) as (_, deps_a), replica(config, postgres_url) as (_, deps_b):
        now = deps_a.clock()
        for n in range(10):
            deps_a.store.calls.record_call(CallRecord(ts=now - 5, call_id=f"c{n}", tool="orchestrate", provider="primary",
                                                model="gpt-sim", status="error", latency_ms=5.0,
                                                error_class="server_error"))
        await deps_a.store.calls.flush()
        opened: list[Any] = []
        for _ in range(3):  # three intervals, both replicas ticking in each, at the same moment
            async with anyio.create_task_group() as group:
                for deps in (deps_a, deps_b):
                    async def tick(deps: Dependencies = deps) -> None:
                        opened.extend(await deps.incidents.tick())
                    group.start_soon(tick)
            await anyio.sleep(1.0)  # bounded-wait, pacing: the next interval slot (slots are wall-clock seconds)
        incidents = await deps_b.incidents.recent()
        await deps_b.incidents.acknowledge(incidents[0].id, by="ops on b", note="looking")
        seen_on_a = await deps_a.incidents.active()
    assert [(i.metric, i.provider) for i in incidents] == [("error_rate", "primary")]
    assert len({i.id for i in opened}) == 1
    # acknowledged on one replica, seen so on the other
    assert [(i.id, i.status, i.acknowledged_by, i.note) for i in seen_on_a] == [
        (incidents[0].id, "acknowledged", "ops on b", "looking")]


async def test_replicas_seal_the_sdks_request_state_with_one_shared_key(postgres_url: str) -> None:
    from mcp.server.request_state import RequestStateSecurity

    a, b = open_store(PostgresDatabase(postgres_url)), open_store(PostgresDatabase(postgres_url))
    try:
        key_a, key_b = await a.shared_key("request-state"), await b.shared_key("request-state")
    finally:
        await a.aclose()
        await b.aclose()
    assert key_a == key_b and len(key_a) == 32
    token = RequestStateSecurity(keys=[key_a]).codec.seal(b"state minted on replica A")
    assert RequestStateSecurity(keys=[key_b]).codec.unseal(token) == b"state minted on replica A"


async def test_a_key_revoked_on_one_replica_is_refused_on_the_other_once_its_cache_expires(
        upstream: Upstream, postgres_url: str) -> None:
    from server.security.keys import create_key
    from server.security.verifiers import ApiKeyVerifier

    config = team_config(upstream)
    now = [time.time()]
    async with replica(config, postgres_url) as (_, deps_a), replica(config, postgres_url) as (_, deps_b):
        created = await create_key(deps_a.store.keys, "alice", "user")
        on_b = ApiKeyVerifier(deps_b.store.keys, cache_s=2.0, clock=lambda: now[0])  # [auth] key_cache_s
        before = await on_b.verify_token(created.key)
        assert await deps_a.store.keys.revoke_api_key(created.record.id, now[0])
        cached = await on_b.verify_token(created.key)  # within key_cache_s: B still trusts what it verified
        now[0] += 2.5
        after = await on_b.verify_token(created.key)
    assert before is not None and before.claims["principal"].id == f"key:{created.record.id}"
    assert cached is not None and after is None
