"""The MCP surface through the in-memory client, in both protocol eras."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from mcp import Client

from server.app.assembly import build_server
from server.config import Config
from server.simulator import Behaviour, Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def config(upstream: Upstream) -> Config:
    return config_for(
        provider_entry(upstream, "primary", kind="openai", model="gpt-sim", priority=1,
                       input_cost_per_mtok=1.0, output_cost_per_mtok=2.0),
        provider_entry(upstream, "backup", kind="anthropic", model="claude-sim", priority=2),
    )


@pytest.fixture
async def client(config: Config, store: MemoryStore, mode: str) -> AsyncIterator[Client]:
    async with Client(build_server(config, store_factory=lambda: store), mode=mode) as c:
        yield c


async def test_tools_are_listed_with_descriptions_annotations_and_output_schemas(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {"orchestrate", "monitor_operations"} <= set(tools)
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40
        assert tool.annotations is not None and tool.annotations.read_only_hint is not None
        assert tool.output_schema is not None
    assert tools["orchestrate"].annotations.open_world_hint is True
    assert tools["monitor_operations"].annotations.read_only_hint is True
    assert "ctx" not in tools["orchestrate"].input_schema["properties"]


async def test_the_server_reports_the_installed_distributions_version(client: Client, mode: str) -> None:
    from importlib import metadata

    info = client.server_info
    assert info is not None or mode != "legacy"  # the 2026-era stamp is optional; the handshake always carries it
    assert info is None or info.version == metadata.version("ai-orchestration-mcp")


async def test_orchestrate_returns_the_upstream_answer_with_figures(client: Client) -> None:
    result = await client.call_tool("orchestrate", {"prompt": "what is MCP", "system": "short"})
    assert not result.is_error, result.content
    out = result.structured_content
    assert out["text"] == "[gpt-sim] what is MCP"
    assert (out["provider"], out["model"]) == ("primary", "gpt-sim")
    assert out["usage"] == {"input_tokens": 4, "output_tokens": 4, "total_tokens": 8}
    assert out["cost_usd"] == pytest.approx((4 * 1.0 + 4 * 2.0) / 1e6)
    assert out["latency_ms"] >= out["attempts"][0]["latency_ms"] > 0
    assert 0 <= out["overhead_ms"] <= out["latency_ms"]
    assert result.content[0].text.startswith(out["text"] + "\n\n[primary (gpt-sim)")  # the answer, then key facts


async def test_fallback_is_visible_in_attempts(client: Client, upstream: Upstream) -> None:
    upstream.script("gpt-sim", Behaviour(status=500))
    out = (await client.call_tool("orchestrate", {"prompt": "hi"})).structured_content
    assert out["provider"] == "backup" and out["text"] == "[claude-sim] hi"
    assert [(a["provider"], a["status"], a.get("error_class")) for a in out["attempts"]] == [
        ("primary", "error", "server_error"), ("backup", "ok", None)]


async def test_monitor_operations_reports_the_calls_just_made(client: Client, upstream: Upstream) -> None:
    upstream.script("gpt-sim", Behaviour(status=503), Behaviour(status=500))
    for _ in range(5):
        assert not (await client.call_tool("orchestrate", {"prompt": "x y"})).is_error
    out = (await client.call_tool("monitor_operations", {"window": "15m"})).structured_content
    groups = {g["key"]: g for g in out["groups"]}
    assert (groups["primary"]["calls"], groups["primary"]["errors"]) == (5, 2)
    assert (groups["backup"]["calls"], groups["backup"]["errors"]) == (2, 0)
    assert groups["primary"]["error_rate"] == pytest.approx(0.4)
    assert groups["primary"]["latency_p50_ms"] <= groups["primary"]["latency_p95_ms"] <= groups["primary"]["latency_p99_ms"]
    assert [p["name"] for p in out["providers"]] == ["primary", "backup"]
    assert [(p["status"], p["circuit"]) for p in out["providers"]] == [("degraded", "closed"), ("ok", "closed")]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"prompt": 42}, "prompt: expected text, got the number 42"),
        ({"prompt": "hi", "max_tokens": "many"}, 'max_tokens: expected a whole number, got the text "many"'),
        ({"prompt": "hi", "providers": "primary"}, "providers: expected a list"),
        ({"prompt": "hi", "providers": ["nope"]}, "unknown provider(s): nope; configured: primary, backup"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "x" * (10 * 1024 * 1024)}, "prompt: must be at most 1,000,000 characters"),
        ({"prompt": "hi", "temperature": 5}, "temperature: expected a number from 0 to 2, got the number 5"),
        ({}, "prompt"),
        ({"prompt": "hi", "temprature": 0.2}, "unknown argument `temprature`: did you mean `temperature`?"),
        ({"prompt": "hi", "window": "1h"}, "unknown argument `window`"),  # refused, not dropped
    ],
)
async def test_bad_arguments_get_a_clear_error_and_the_server_keeps_serving(
    client: Client, arguments: dict, expected: str | None
) -> None:
    result = await client.call_tool("orchestrate", arguments)
    if expected is None:
        assert not result.is_error
    else:
        assert result.is_error
        assert expected in result.content[0].text
        assert len(result.content[0].text) < 2000  # a 10 MB prompt is not echoed back
    after = await client.call_tool("orchestrate", {"prompt": "still there?"})
    assert not after.is_error


async def test_bad_monitor_window_is_a_clear_error(client: Client) -> None:
    result = await client.call_tool("monitor_operations", {"window": "forever"})
    assert result.is_error and "15m, 1h, 24h, 7d" in result.content[0].text


async def test_all_providers_failing_says_what_failed(client: Client, upstream: Upstream) -> None:
    upstream.script("gpt-sim", Behaviour(status=500), repeat=True)
    upstream.script("claude-sim", Behaviour(drop=True), repeat=True)
    result = await client.call_tool("orchestrate", {"prompt": "hi"})
    assert result.is_error
    text = result.content[0].text
    assert "primary (server_error)" in text and "backup (connection)" in text and "list_providers" in text


async def test_without_providers_the_server_serves_and_says_what_to_set(mode: str) -> None:
    async with Client(build_server(Config(), store_factory=MemoryStore), mode=mode) as c:
        assert len((await c.list_tools()).tools) >= 2
        result = await c.call_tool("orchestrate", {"prompt": "hi"})
        assert result.is_error and "OPENAI_API_KEY" in result.content[0].text
        monitor = await c.call_tool("monitor_operations", {})
        assert not monitor.is_error and monitor.structured_content["groups"] == []


def test_connecting_imports_no_provider_sdk_or_telemetry_sdk() -> None:
    """The handshake does not pay for the SDK imports: the warm start imports them once the server has answered
    a request after ``initialize`` (tests/integration/test_startup_imports.py shows it does)."""
    script = """
import sys, anyio
from mcp import Client
from server.app.assembly import build_server, open_store
from server.config import load_config
config = load_config(None, {"OPENAI_API_KEY": "sk-x-000000", "ANTHROPIC_API_KEY": "sk-ant-x-000000"})
async def main():
    async with Client(build_server(config, store_factory=lambda: open_store(":memory:")), mode="legacy") as c:
        print(sorted(m for m in ("openai", "anthropic", "opentelemetry.sdk") if m in sys.modules))
anyio.run(main)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stderr
