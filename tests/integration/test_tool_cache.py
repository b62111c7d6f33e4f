"""The tool schema cache (tools._lazy): a warm start lists exactly what a cold one does, and its tools, built
at their first call, behave the same; a bad cache file is replaced."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import pytest
from mcp import Client

import tools._lazy as lazy
from server.app.assembly import build_server
from server.simulator import Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(lazy, "_cache", None)
    return tmp_path / "cache" / "ai-orchestration-mcp"


async def session(upstream: Upstream) -> tuple[list[dict], set[str], dict, str]:
    server = build_server(config_for(provider_entry(upstream, "primary", model="gpt-sim")), store_factory=MemoryStore)
    kinds = {type(t).__name__ for t in server._tool_manager.list_tools()}
    async with Client(server) as client:
        listed = [t.model_dump() for t in (await client.list_tools()).tools]
        answer = await client.call_tool("orchestrate", {"prompt": "hi"})
        refused = await client.call_tool("orchestrate", {"prompt": "hi", "max_tokens": "many"})
    assert not answer.is_error and refused.is_error
    return listed, kinds, answer.structured_content, refused.content[0].text


async def test_a_warm_start_lists_the_same_tools_and_builds_them_at_first_call(
        upstream: Upstream, cache_home: Path) -> None:
    cold, cold_kinds, cold_answer, cold_refusal = await session(upstream)
    assert cold_kinds == {"Tool"} and len(list(cache_home.glob("tool-schemas-*.json"))) == 1
    lazy._cache = None  # as a new process would: read the file
    warm, warm_kinds, warm_answer, warm_refusal = await session(upstream)
    assert warm_kinds == {"LazyTool"}
    assert warm == cold and len(warm) >= 10
    assert warm_answer["text"] == cold_answer["text"] == "[gpt-sim] hi" and warm_refusal == cold_refusal


async def test_an_unreadable_or_stale_cache_is_rebuilt(upstream: Upstream, cache_home: Path) -> None:
    cache_home.mkdir(parents=True)
    current = lazy.cache_file()
    current.write_text("{not json")
    stale = cache_home / "tool-schemas-0000.json"
    stale.write_text("{}")
    _, kinds, _, _ = await session(upstream)
    assert kinds == {"Tool"}
    assert "orchestrate" in json.loads(current.read_text()) and not stale.exists()


def test_the_cache_key_follows_source_edits_and_package_versions(tmp_path: Path) -> None:
    source = tmp_path / "tools" / "sub" / "a.py"
    source.parent.mkdir(parents=True)
    source.write_text("x = 1\n")
    before = lazy._source_files(tmp_path, "tools")
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000))  # saved again, same content
    assert lazy._source_files(tmp_path, "tools") != before
    assert [path for path, _, _ in before] == ["tools/sub/a.py"]
    assert lazy._distributions(("mcp", "pydantic")) == [f"mcp-{metadata.version('mcp')}.dist-info",
                                                         f"pydantic-{metadata.version('pydantic')}.dist-info"]
