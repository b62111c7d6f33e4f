"""`orchestrate` end to end in memory: conversations, the response cache, A/B buckets, pool health surfaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from server.app.assembly import build_server, open_store
from server.config import Config
from server.pool.orchestration import trim_history
from server.simulator import Behaviour, Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio


def two_providers(upstream: Upstream, **sections) -> Config:
    return config_for(provider_entry(upstream, "alpha", kind="openai", model="a", priority=1),
                      provider_entry(upstream, "beta", kind="anthropic", model="b", priority=2), **sections)


async def call(client: Client, **arguments) -> dict:
    result = await client.call_tool("orchestrate", arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def sent_messages(upstream: Upstream, index: int = -1) -> list[tuple[str, str]]:
    body = upstream.requests[index].body
    return [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
            for m in body["messages"] if m["role"] != "system"]


async def test_conversation_continues_across_a_provider_switch(upstream: Upstream) -> None:
    async with Client(build_server(two_providers(upstream), store_factory=MemoryStore)) as client:
        first = await call(client, prompt="my name is Ada")
        assert first["provider"] == "alpha"
        second = await call(client, prompt="what is my name?", continuation_id=first["continuation_id"],
                            providers=["beta"])
        assert second["provider"] == "beta"
        assert second["continuation_id"] == first["continuation_id"]
    assert sent_messages(upstream) == [("user", "my name is Ada"), ("assistant", "[a] my name is Ada"),
                                       ("user", "what is my name?")]
    assert upstream.requests[-1].wire == "anthropic"


async def test_conversation_survives_a_server_restart(upstream: Upstream, tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    config = two_providers(upstream)
    async with Client(build_server(config, store_factory=lambda: open_store(database))) as client:
        first = await call(client, prompt="remember 7")
    async with Client(build_server(config, store_factory=lambda: open_store(database))) as client:
        await call(client, prompt="what did I ask you to remember?", continuation_id=first["continuation_id"])
    assert sent_messages(upstream)[:2] == [("user", "remember 7"), ("assistant", "[a] remember 7")]


async def test_unknown_continuation_id_is_a_clear_error(upstream: Upstream) -> None:
    async with Client(build_server(two_providers(upstream), store_factory=MemoryStore)) as client:
        result = await client.call_tool("orchestrate", {"prompt": "hi", "continuation_id": "nope"})
    assert result.is_error and "unknown continuation_id 'nope'" in result.content[0].text
    assert upstream.requests == []


def test_history_is_trimmed_to_the_budget_newest_first() -> None:
    turns = [("user", "a" * 400), ("assistant", "b" * 400), ("user", "c" * 40), ("assistant", "d" * 40)]
    assert trim_history(turns, 50) == [("user", "c" * 40), ("assistant", "d" * 40)]
    assert trim_history(turns, 150) == [("user", "c" * 40), ("assistant", "d" * 40)]  # must open on a user turn
    assert trim_history(turns, 10_000) == turns


async def test_identical_temperature_zero_request_is_answered_from_the_cache(upstream: Upstream) -> None:
    store = MemoryStore()
    config = two_providers(upstream, cache={"enabled": True, "ttl_s": 600})
    async with Client(build_server(config, store_factory=lambda: store)) as client:
        first = await call(client, prompt="cache me", temperature=0)
        second = await call(client, prompt="cache me", temperature=0)
        warm = await call(client, prompt="cache me", temperature=0.7)
    assert len(upstream.requests) == 2  # the second call never reached a provider; the warm one did
    assert (first["cached"], second["cached"], warm["cached"]) == (False, True, False)
    assert second["text"] == first["text"] and second["cost_usd"] == 0
    assert second["attempts"] == [{"provider": "alpha", "model": "a", "status": "cached", "error_class": None,
                                   "error": None, "latency_ms": 0.0}]
    assert [r.cached for r in store.calls.records] == [False, True, False]


async def test_user_stays_in_one_ab_bucket_and_the_bucket_is_recorded(upstream: Upstream) -> None:
    store = MemoryStore()
    config = two_providers(upstream, experiments=[{"name": "try-beta", "percentage": 50, "variant": ["beta"],
                                                   "control": ["alpha"]}])
    async with Client(build_server(config, store_factory=lambda: store)) as client:
        seen: dict[str, set[str]] = {}
        for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
            for _ in range(3):
                out = await call(client, prompt="hi", user_id=user)
                seen.setdefault(user, set()).add((out["ab_bucket"], out["provider"]))
    assert all(len(buckets) == 1 for buckets in seen.values())  # sticky
    pairs = {next(iter(b)) for b in seen.values()}
    assert pairs == {("try-beta:variant", "beta"), ("try-beta:control", "alpha")}
    assert {r.ab_bucket for r in store.calls.records} == {"try-beta:variant", "try-beta:control"}


async def test_json_mode_through_the_tool(upstream: Upstream) -> None:
    upstream.script("a", Behaviour(text="not json"))
    upstream.script("b", Behaviour(text='{"ok": true}'))
    async with Client(build_server(two_providers(upstream), store_factory=MemoryStore)) as client:
        out = await call(client, prompt="answer in JSON", response_format="json")
    assert json.loads(out["text"]) == {"ok": True}
    assert [a["error_class"] for a in out["attempts"]] == ["malformed_reply", None]


async def test_list_providers_and_pool_resource_show_state_without_secrets(upstream: Upstream) -> None:
    secret = "sk-canary-pool-state-0123456789"
    config = config_for(provider_entry(upstream, "alpha", model="a", api_key=secret, rpm=100),
                        provider_entry(upstream, "beta", kind="anthropic", model="b", priority=20))
    upstream.script("a", Behaviour(status=429, retry_after_s=60))
    async with Client(build_server(config, store_factory=MemoryStore)) as client:
        await call(client, prompt="hi")
        listed = (await client.call_tool("list_providers", {})).structured_content
        resource = await client.read_resource("providers://pool")
    alpha = next(p for p in listed["providers"] if p["name"] == "alpha")
    assert alpha["available"] is False and "rate limit" in alpha["unavailable_reason"]
    assert 55 < alpha["cooldown_remaining_s"] <= 60
    assert alpha["circuit"] == "closed"
    beta = next(p for p in listed["providers"] if p["name"] == "beta")
    assert beta["available"] is True and beta["ewma_latency_ms"] > 0
    text = resource.contents[0].text
    assert json.loads(text)["providers"][0]["name"] == "alpha"
    assert secret not in text and secret not in json.dumps(listed)
