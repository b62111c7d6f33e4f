"""Patterns through MCP, in both protocol eras: tools, resources, prompts, notifications, completions, and
`orchestrate` running a pattern."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.client.subscriptions import PromptsListChanged, ResourcesListChanged, ResourceUpdated
from mcp_types import PromptListChangedNotification, ResourceListChangedNotification

from server.app.assembly import build_server, open_store
from server.config import Config
from server.simulator import Behaviour, Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio

GREET = {"name": "greet", "description": "Greet someone warmly", "template": "Hello {{ who.name }}, {{ mood }}!",
         "variables": [{"name": "who", "description": "The person"},
                       {"name": "mood", "default": "welcome", "choices": ["welcome", "cheers"]}],
         "metadata": {"domain": "social", "tags": ["greeting"]}}


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def config(upstream: Upstream) -> Config:
    return config_for(provider_entry(upstream, "primary", model="gpt-sim"))


@pytest.fixture
async def client(config: Config, mode: str) -> AsyncIterator[Client]:
    async with Client(build_server(config, store_factory=MemoryStore), mode=mode) as c:
        yield c


async def call(client: Client, tool: str, **arguments: Any) -> dict:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    return result.content[0].text


async def test_registered_pattern_is_at_once_a_prompt_a_resource_and_searchable(client: Client) -> None:
    out = await call(client, "register_pattern", **GREET)
    assert {k: out[k] for k in ("name", "version", "changed", "kind", "uri", "prompt", "copilot_file")} == {
        "name": "greet", "version": 1, "changed": True, "kind": "template", "uri": "knowledge://patterns/greet",
        "prompt": "greet", "copilot_file": ".github/prompts/greet.prompt.md"}
    assert [(v["name"], v["required"], v.get("default")) for v in out["variables"]] == [
        ("who", True, None), ("mood", False, "welcome")]

    prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert [(a.name, a.required) for a in prompts["greet"].arguments] == [("who", True), ("mood", False)]
    assert "JSON object with name" in prompts["greet"].arguments[0].description
    rendered = await client.get_prompt("greet", {"who": '{"name": "Ada"}'})
    assert rendered.messages[0].role == "user" and rendered.messages[0].content.text == "Hello Ada, welcome!"

    listed = {r.uri: r for r in (await client.list_resources()).resources}
    assert listed["knowledge://patterns/greet"].description == "Greet someone warmly"
    document = json.loads((await client.read_resource("knowledge://patterns/greet")).contents[0].text)
    assert (document["version"], document["versions"], document["template"]) == (1, [1], GREET["template"])
    index = json.loads((await client.read_resource("knowledge://patterns")).contents[0].text)
    assert "greet" in [p["name"] for p in index["patterns"]] and index["count"] == len(index["patterns"])

    found = await call(client, "search_patterns", query="warm greeting", tags=["greeting"])
    assert found["results"][0] == {"name": "greet", "description": "Greet someone warmly",
                                   "variables": ["who", "mood"], "tags": ["greeting"],
                                   "score": found["results"][0]["score"]}


async def test_update_bumps_the_version_and_the_old_one_stays_readable(client: Client) -> None:
    await call(client, "register_pattern", **GREET)
    again = await call(client, "register_pattern", **GREET)
    assert (again["version"], again["changed"]) == (1, False)
    updated = await call(client, "register_pattern", **{**GREET, "template": "Hi {{ who.name }} ({{ mood }})"})
    assert (updated["version"], updated["version_uri"]) == (2, "knowledge://patterns/greet/versions/2")
    old = json.loads((await client.read_resource("knowledge://patterns/greet/versions/1")).contents[0].text)
    assert old["template"] == GREET["template"] and old["version"] == 1
    current = json.loads((await client.read_resource("knowledge://patterns/greet")).contents[0].text)
    assert current["versions"] == [1, 2]
    assert (await client.get_prompt("greet", {"who": '{"name": "Bo"}'})).messages[0].content.text == "Hi Bo (welcome)"
    with pytest.raises(MCPError, match=r"has no version 3 \(versions: 1, 2\)"):
        await client.read_resource("knowledge://patterns/greet/versions/3")


async def test_prompt_errors_name_the_variable(client: Client) -> None:
    await call(client, "register_pattern", **GREET)
    with pytest.raises(MCPError, match=r"needs variable 'who'") as caught:
        await client.get_prompt("greet", {"mood": "cheers"})
    assert caught.value.error.code == -32602
    with pytest.raises(MCPError, match="'who' has no key 'name'"):
        await client.get_prompt("greet", {"who": '{"nom": "Ada"}'})
    with pytest.raises(MCPError, match="has no variable 'whom'"):
        await client.get_prompt("greet", {"who": "{}", "whom": "x"})


async def test_bad_patterns_are_refused_and_change_nothing(client: Client) -> None:
    assert "name" in await error(client, "register_pattern", **{**GREET, "name": "Not A Slug"})
    assert "invalid placeholder {{ __class__ }}" in await error(client, "register_pattern", name="probe",
                                                                description="d", template="{{ __class__ }}")
    assert "never closed" in await error(client, "register_pattern", name="open", description="d",
                                         template="Hello {{ who")
    assert "template" in await error(client, "register_pattern", name="big", description="d",
                                     template="x" * 1_000_000)
    assert "'ghost' is not declared" in await error(client, "register_pattern", name="decl", description="d",
                                                    template="{{ ghost }}", variables=[{"name": "real"}])
    names = {p.name for p in (await client.list_prompts()).prompts}
    assert not names & {"probe", "open", "big", "decl"}
    found = (await call(client, "search_patterns", query="probe open big decl", limit=50))["results"]
    assert not {r["name"] for r in found} & {"probe", "open", "big", "decl"}
    with pytest.raises(MCPError, match="no pattern named 'probe'"):
        await client.read_resource("knowledge://patterns/probe")


async def test_builtin_patterns_are_offered_from_the_start(client: Client) -> None:
    names = {p.name for p in (await client.list_prompts()).prompts}
    assert {"code-review", "summarize", "decision-record", "release-notes", "threat-model"} <= names
    hits = (await call(client, "search_patterns", query="threat model stride"))["results"]
    assert hits[0]["name"] == "threat-model"
    text = (await client.get_prompt("summarize", {"text": "MCP is a protocol."})).messages[0].content.text
    assert "MCP is a protocol." in text and "{{" not in text


async def test_copilot_exports_are_resources(client: Client) -> None:
    await call(client, "register_pattern", **GREET)
    overview = (await client.read_resource("knowledge://exports/copilot-instructions")).contents[0].text
    assert "`/greet`: Greet someone warmly" in overview
    file = (await client.read_resource("knowledge://exports/copilot/greet")).contents[0].text
    assert file.startswith('---\ndescription: "Greet someone warmly"\n---\n')
    assert "${input:who.name:The person}" in file
    guidance = (await client.read_resource("knowledge://exports/copilot/secure-coding")).contents[0].text
    assert guidance.startswith('---\napplyTo: "**/*.py,')


async def test_completions_offer_choices_names_and_versions(client: Client) -> None:
    await call(client, "register_pattern", **GREET)
    await call(client, "register_pattern", **{**GREET, "description": "Second version"})
    mood = await client.complete({"type": "ref/prompt", "name": "greet"}, {"name": "mood", "value": "ch"})
    assert mood.completion.values == ["cheers"]
    names = await client.complete({"type": "ref/resource", "uri": "knowledge://patterns/{name}"},
                                  {"name": "name", "value": "gr"})
    assert names.completion.values == ["greet"]
    versions = await client.complete({"type": "ref/resource", "uri": "knowledge://patterns/{name}/versions/{version}"},
                                     {"name": "version", "value": ""}, context_arguments={"name": "greet"})
    assert versions.completion.values == ["2", "1"]


async def test_handshake_era_declares_list_changed_and_gets_notified(config: Config) -> None:
    received: list[Any] = []

    async def handler(message: Any) -> None:
        received.append(message)

    async with Client(build_server(config, store_factory=MemoryStore), mode="legacy", message_handler=handler) as c:
        capabilities = c.server_capabilities
        assert capabilities.prompts.list_changed and capabilities.resources.list_changed
        assert capabilities.completions is not None
        await call(c, "register_pattern", **GREET)
        await c.list_tools()  # a round trip: the notifications travel ahead of its answer
        kinds = {type(m) for m in received}
        assert {PromptListChangedNotification, ResourceListChangedNotification} <= kinds
        received.clear()
        await call(c, "register_pattern", **GREET)  # unchanged: nothing to announce
        await c.list_tools()
        assert received == []


async def test_2026_era_list_changed_arrives_on_subscriptions_listen(config: Config) -> None:
    async with Client(build_server(config, store_factory=MemoryStore)) as c:
        assert c.protocol_version == "2026-07-28"
        assert c.server_capabilities.prompts.list_changed
        async with c.listen(prompts_list_changed=True, resources_list_changed=True,
                            resource_subscriptions=["knowledge://patterns/greet"]) as subscription:
            await call(c, "register_pattern", **GREET)
            seen: set[type] = set()
            with anyio.fail_after(5):
                async for event in subscription:
                    seen.add(type(event))
                    if isinstance(event, ResourceUpdated):
                        assert event.uri == "knowledge://patterns/greet"
                    if seen >= {PromptsListChanged, ResourcesListChanged, ResourceUpdated}:
                        break


async def test_orchestrate_runs_a_pattern_with_variables(client: Client, upstream: Upstream) -> None:
    await call(client, "register_pattern", **GREET)
    out = await call(client, "orchestrate", pattern="greet", variables={"who": {"name": "Ada"}, "mood": "cheers"})
    assert out["text"] == "[gpt-sim] Hello Ada, cheers!"
    assert (out["pattern"], out["pattern_version"]) == ("greet", 1)
    assert upstream.requests[-1].body["messages"][-1]["content"] == "Hello Ada, cheers!"
    plain = await call(client, "orchestrate", prompt="just text")
    assert "pattern" not in plain  # results leave None fields out


async def test_consensus_runs_a_pattern_on_every_provider(upstream: Upstream, mode: str) -> None:
    config = config_for(provider_entry(upstream, "one", model="m1"), provider_entry(upstream, "two", model="m2"))
    upstream.script("m1", Behaviour(text="yes"))
    upstream.script("m2", Behaviour(text="Yes."))
    async with Client(build_server(config, store_factory=MemoryStore), mode=mode) as client:
        await call(client, "register_pattern", **GREET)
        out = await call(client, "consensus", pattern="greet", variables={"who": {"name": "Ada"}}, method="vote")
    assert (out["status"], out["agreement"], out["pattern"], out["pattern_version"]) == ("consensus", 1.0, "greet", 1)
    assert sorted(r.body["messages"][-1]["content"] for r in upstream.requests) == ["Hello Ada, welcome!"] * 2


@pytest.mark.parametrize(("arguments", "message"), [
    ({"prompt": "x", "pattern": "greet"}, "either `prompt`"),
    ({}, "pass `prompt`"),
    ({"prompt": "x", "variables": {"who": "y"}}, "`variables` only go with `pattern`"),
    ({"pattern": "nope"}, "no pattern named 'nope'"),
    ({"pattern": "greet", "variables": {"mood": "cheers"}}, "needs variable 'who'"),
    ({"pattern": "greet", "variables": {"who": {"name": "A"}, "extra": 1}}, "has no variable 'extra'"),
])
@pytest.mark.parametrize("tool", ["orchestrate", "consensus"])
async def test_prompt_tools_refuse_bad_prompt_sources_before_calling_a_provider(
        client: Client, upstream: Upstream, arguments: dict, message: str, tool: str) -> None:
    await call(client, "register_pattern", **GREET)
    assert message in await error(client, tool, **arguments)
    assert upstream.requests == []


async def test_pattern_tools_are_described_and_annotated(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    register, search = tools["register_pattern"], tools["search_patterns"]
    assert "{{ variable }}" in register.description and "new version" in register.description
    assert (register.annotations.read_only_hint, register.annotations.destructive_hint,
            register.annotations.idempotent_hint, register.annotations.open_world_hint) == (False, False, False, False)
    assert (search.annotations.read_only_hint, search.annotations.idempotent_hint) == (True, True)
    assert "pattern" in tools["orchestrate"].input_schema["properties"]
    assert "prompt" not in tools["orchestrate"].input_schema.get("required", [])


async def test_patterns_prompts_and_versions_survive_a_restart(config: Config, tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    async with Client(build_server(config, store_factory=lambda: open_store(database))) as c:
        await call(c, "register_pattern", **GREET)
        await call(c, "register_pattern", **{**GREET, "description": "Updated"})
    async with Client(build_server(config, store_factory=lambda: open_store(database)), mode="legacy") as c:
        assert "greet" in {p.name for p in (await c.list_prompts()).prompts}
        old = json.loads((await c.read_resource("knowledge://patterns/greet/versions/1")).contents[0].text)
        assert old["description"] == "Greet someone warmly"
        assert (await call(c, "search_patterns", query="updated"))["results"][0]["name"] == "greet"
