"""`orchestrate` through the in-memory MCP client over fake providers: conversations, the response cache (per
principal), A/B buckets, progress, NaN refusal, pool health surfaces, internal errors."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pytest
from mcp import Client

from server.app.assembly import build_server, open_store
from server.config import Config
from server.errors import InvalidRequest
from server.pool.orchestration import OrchestrateRequest, orchestrate, trim_history
from server.pool.pool import ProviderPool
from server.security import Principal
from server.store.memory import MemoryStore
from tests.fakes import Fleet, Reply, fail, fake_config, fake_entry, fleet_for

pytestmark = pytest.mark.anyio


def two_providers(**sections) -> Config:
    return fake_config(fake_entry("alpha", model="a", priority=1),
                       fake_entry("beta", kind="anthropic", model="b", priority=2), **sections)


def server(config: Config, fleet: Fleet, store: MemoryStore | None = None):
    return build_server(config, store_factory=lambda: store or MemoryStore(), provider_factory=fleet)


async def call(client: Client, **arguments) -> dict:
    result = await client.call_tool("orchestrate", arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def sent(fleet: Fleet, name: str, index: int = -1) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in fleet[name].requests[index].messages]


async def test_conversation_continues_across_a_provider_switch() -> None:
    config = two_providers()
    fleet = fleet_for(config)
    async with Client(server(config, fleet)) as client:
        first = await call(client, prompt="my name is Ada")
        assert first["provider"] == "alpha"
        second = await call(client, prompt="what is my name?", continuation_id=first["continuation_id"],
                            providers=["beta"])
        assert second["provider"] == "beta" and second["continuation_id"] == first["continuation_id"]
    assert sent(fleet, "beta") == [("user", "my name is Ada"), ("assistant", "[a] my name is Ada"),
                                   ("user", "what is my name?")]


async def test_conversation_survives_a_server_restart(tmp_path: Path) -> None:
    database, config = tmp_path / "state.db", two_providers()
    fleet = fleet_for(config)
    async with Client(build_server(config, store_factory=lambda: open_store(database), provider_factory=fleet)) as c:
        first = await call(c, prompt="remember 7")
    async with Client(build_server(config, store_factory=lambda: open_store(database), provider_factory=fleet)) as c:
        await call(c, prompt="what did I ask you to remember?", continuation_id=first["continuation_id"])
    assert sent(fleet, "alpha")[:2] == [("user", "remember 7"), ("assistant", "[a] remember 7")]


async def test_unknown_continuation_id_is_a_clear_error() -> None:
    config = two_providers()
    fleet = fleet_for(config)
    async with Client(server(config, fleet)) as client:
        result = await client.call_tool("orchestrate", {"prompt": "hi", "continuation_id": "nope"})
    assert result.is_error and "unknown continuation_id 'nope'" in result.content[0].text
    assert fleet.seen() == []


def test_history_is_trimmed_to_the_budget_newest_first() -> None:
    turns = [("user", "a" * 400), ("assistant", "b" * 400), ("user", "c" * 40), ("assistant", "d" * 40)]
    assert trim_history(turns, 50) == [("user", "c" * 40), ("assistant", "d" * 40)]
    assert trim_history(turns, 150) == [("user", "c" * 40), ("assistant", "d" * 40)]  # must open on a user turn
    assert trim_history(turns, 10_000) == turns


async def test_identical_temperature_zero_request_is_answered_from_the_cache() -> None:
    store, config = MemoryStore(), two_providers(cache={"enabled": True, "ttl_s": 600})
    fleet = fleet_for(config)
    async with Client(server(config, fleet, store)) as client:
        first = await call(client, prompt="cache me", temperature=0)
        second = await call(client, prompt="cache me", temperature=0)
        warm = await call(client, prompt="cache me", temperature=0.7)
    assert len(fleet.seen()) == 2  # the second call never reached a provider; the warm one did
    assert (first["cached"], second["cached"], warm["cached"]) == (False, True, False)
    assert second["text"] == first["text"] and second["cost_usd"] == 0
    assert second["attempts"] == [{"provider": "alpha", "model": "a", "status": "cached", "latency_ms": 0.0}]
    assert [r.cached for r in store.calls.records] == [False, True, False]


async def test_the_response_cache_is_per_principal() -> None:
    store, config = MemoryStore(), two_providers(cache={"enabled": True, "ttl_s": 600})
    fleet = fleet_for(config)
    pool = ProviderPool([(p, fleet(p)) for p in config.providers], store.calls, config=config)
    ask = OrchestrateRequest(prompt="what is my secret plan?", temperature=0)
    alice, bob = Principal("key:alice", "user"), Principal("key:bob", "user")
    fleet["alpha"].script(Reply(text="alice's plan"), Reply(text="bob's own answer"))
    first = await orchestrate(pool, store, config, ask, principal=alice)
    again = await orchestrate(pool, store, config, ask, principal=alice)
    other = await orchestrate(pool, store, config, ask, principal=bob)
    assert (first.text, again.cached) == ("alice's plan", True)
    assert (other.text, other.cached) == ("bob's own answer", False)  # never alice's answer
    assert len(fleet["alpha"].seen) == 2


async def test_a_continuation_id_belongs_to_its_principal() -> None:
    store, config = MemoryStore(), two_providers()
    fleet = fleet_for(config)
    pool = ProviderPool([(p, fleet(p)) for p in config.providers], store.calls, config=config)
    alice, bob = Principal("key:alice", "user"), Principal("key:bob", "user")
    first = await orchestrate(pool, store, config, OrchestrateRequest(prompt="hello"), principal=alice)
    with pytest.raises(InvalidRequest, match="unknown continuation_id"):
        await orchestrate(pool, store, config, OrchestrateRequest(prompt="hi", continuation_id=first.continuation_id),
                          principal=bob)


async def test_user_stays_in_one_ab_bucket_and_the_bucket_is_recorded() -> None:
    store = MemoryStore()
    config = two_providers(experiments=[{"name": "try-beta", "percentage": 50, "variant": ["beta"],
                                         "control": ["alpha"]}])
    async with Client(server(config, fleet_for(config), store)) as client:
        seen: dict[str, set[tuple[str, str]]] = {}
        for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
            for _ in range(3):
                out = await call(client, prompt="hi", user_id=user)
                seen.setdefault(user, set()).add((out["ab_bucket"], out["provider"]))
    assert all(len(buckets) == 1 for buckets in seen.values())  # sticky
    assert {next(iter(b)) for b in seen.values()} == {("try-beta:variant", "beta"), ("try-beta:control", "alpha")}
    assert {r.ab_bucket for r in store.calls.records} == {"try-beta:variant", "try-beta:control"}


async def test_json_mode_through_the_tool() -> None:
    config = two_providers()
    fleet = fleet_for(config)
    fleet["alpha"].script(Reply(text="not json"))
    fleet["beta"].script(Reply(text='{"ok": true}'))
    async with Client(server(config, fleet)) as client:
        out = await call(client, prompt="answer in JSON", response_format="json")
    assert json.loads(out["text"]) == {"ok": True}
    assert [a.get("error_class") for a in out["attempts"]] == ["malformed_reply", None]


async def test_orchestrate_reports_progress_through_a_real_client_with_a_progress_token() -> None:
    config = fake_config(*(fake_entry(name, priority=i) for i, name in enumerate(("a", "b", "c"))))
    fleet = fleet_for(config)
    fleet["a"].script(fail("not_found"))
    fleet["b"].script(fail("server_error"))
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(server(config, fleet)) as client:
        result = await client.call_tool("orchestrate", {"prompt": "hi"}, progress_callback=on_progress)
        quiet = await client.call_tool("orchestrate", {"prompt": "hi"})  # no token: nothing sent, nothing fails
    assert not result.is_error and result.structured_content["provider"] == "c" and not quiet.is_error
    assert seen == [(1, 3, "asking a (attempt 1 of 3)"),
                    (2, 3, "a failed (not_found); falling back to b (attempt 2 of 3)"),
                    (3, 3, "b failed (server_error); falling back to c (attempt 3 of 3)")]


@pytest.mark.parametrize("arguments", [{"temperature": math.nan}, {"timeout_s": math.inf}, {"timeout_s": math.nan}])
async def test_nan_and_infinite_numbers_are_refused_with_a_clear_error(arguments: dict) -> None:
    # Through a client, JSON has no NaN (the in-memory client sends null; tests/integration sends the literal).
    store, config = MemoryStore(), two_providers()
    fleet = fleet_for(config)
    pool = ProviderPool([(p, fleet(p)) for p in config.providers], store.calls, config=config)
    name = next(iter(arguments))
    with pytest.raises(InvalidRequest, match=f"{name} must be a finite number"):
        await orchestrate(pool, store, config, OrchestrateRequest(prompt="hi", **arguments))
    assert fleet.seen() == []


async def test_a_bug_reaches_the_client_as_an_internal_error_with_a_reference_to_the_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = fake_config(fake_entry("buggy"))
    fleet = fleet_for(config)
    fleet["buggy"].script(Reply(raises=KeyError("secret internals")))
    with caplog.at_level(logging.ERROR):
        async with Client(server(config, fleet)) as client:
            result = await client.call_tool("orchestrate", {"prompt": "hi"})
    assert result.is_error
    text = result.content[0].text
    ref = re.search(r"internal error \(ref ([0-9a-f]{12})\)", text)
    assert ref and "secret internals" not in text and "KeyError" not in text
    logged = [r for r in caplog.records if ref.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is KeyError  # the traceback, under the ref


async def test_list_providers_and_pool_resource_show_state_without_secrets() -> None:
    secret = "sk-canary-pool-state-0123456789"
    config = fake_config(fake_entry("alpha", model="a", api_key=secret, rpm=100),
                         fake_entry("beta", kind="anthropic", model="b", priority=20))
    fleet = fleet_for(config)
    fleet["alpha"].script(fail("rate_limited", retry_after_s=60))
    async with Client(server(config, fleet)) as client:
        await call(client, prompt="hi")
        listed = (await client.call_tool("list_providers", {})).structured_content
        resource = await client.read_resource("providers://pool")
    alpha = next(p for p in listed["providers"] if p["name"] == "alpha")
    assert alpha["available"] is False and "rate limit" in alpha["unavailable_reason"]
    assert 55 < alpha["cooldown_remaining_s"] <= 60 and alpha["circuit"] == "closed"
    beta = next(p for p in listed["providers"] if p["name"] == "beta")
    assert beta["available"] is True and beta["ewma_latency_ms"] >= 0
    text = resource.contents[0].text
    assert json.loads(text)["providers"][0]["name"] == "alpha"
    assert secret not in text and secret not in json.dumps(listed)
