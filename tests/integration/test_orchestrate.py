"""`orchestrate` through the real SDKs over HTTP: a conversation moves across providers of both wire formats.
The service's logic (the cache, A/B buckets, progress, errors) is tested against fake providers in
``tests/unit/test_orchestrate.py``."""

from __future__ import annotations

import pytest
from mcp import Client

from server.app.assembly import build_server
from server.simulator import Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio


def sent_messages(upstream: Upstream, index: int = -1) -> list[tuple[str, str]]:
    body = upstream.requests[index].body
    return [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
            for m in body["messages"] if m["role"] != "system"]


async def test_conversation_continues_across_a_provider_switch(upstream: Upstream) -> None:
    config = config_for(provider_entry(upstream, "alpha", kind="openai", model="a", priority=1),
                        provider_entry(upstream, "beta", kind="anthropic", model="b", priority=2))
    async with Client(build_server(config, store_factory=MemoryStore)) as client:
        first = (await client.call_tool("orchestrate", {"prompt": "my name is Ada"})).structured_content
        second = (await client.call_tool("orchestrate", {"prompt": "what is my name?", "providers": ["beta"],
                                                         "continuation_id": first["continuation_id"]})
                  ).structured_content
    assert (first["provider"], second["provider"]) == ("alpha", "beta")
    assert sent_messages(upstream) == [("user", "my name is Ada"), ("assistant", "[a] my name is Ada"),
                                       ("user", "what is my name?")]
    assert [r.wire for r in upstream.requests] == ["openai", "anthropic"]


def test_nan_and_infinite_numbers_sent_as_json_literals_are_refused_clearly(tmp_path) -> None:
    import json

    from tests.serving import RawStdioSession

    config = tmp_path / "config.toml"
    config.write_text('[[providers]]\nname = "a"\nkind = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n')
    session = RawStdioSession(["--config", str(config), "--database", str(tmp_path / "state.db")])
    try:
        session.initialize()
        for tool, name, literal in (("orchestrate", "temperature", "NaN"), ("orchestrate", "timeout_s", "Infinity"),
                                    ("consensus", "threshold", "NaN"), ("consensus", "deadline_s", "-Infinity")):
            request = {"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                       "params": {"name": tool, "arguments": {"prompt": "hi", name: "@"}}}
            session.process.stdin.write(json.dumps(request).replace('"@"', literal) + "\n")
            session.process.stdin.flush()
            while (reply := session.receive()).get("id") != 99:
                pass
            result = reply["result"]
            assert result["isError"] and name in result["content"][0]["text"]
            assert "finite number" in result["content"][0]["text"]
    finally:
        assert session.close() == 0
