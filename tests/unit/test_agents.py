"""The agent registry, the routing and planning contracts, and agent steps in definitions, in process (fake
providers); the whole paths through the MCP client against the scripted upstream are in
``tests/integration/test_agents.py``."""

from __future__ import annotations

import json

import pytest
from mcp import Client, MCPError

from server.agents.planner import parse_reply
from server.agents.registry import AgentRegistry, InvalidAgent, UnknownAgent
from server.agents.service import available_providers
from server.agents.routing import normalize, parse_choice
from server.agents.settings import AgentSpec
from server.app.assembly import build_server
from server.config import Config
from server.errors import RateLimited
from server.pool.pool import ProviderPool
from server.store.memory import MemoryStore
from server.workflows.model import InvalidWorkflow
from server.workflows.validation import validate
from tests.fakes import Reply, fake_config, fake_entry, fleet_for

pytestmark = pytest.mark.anyio
CONFIGURED = {"ops": AgentSpec(description="Runs operations", capabilities=("ops",), providers=("p1",))}


def registry(available: tuple[str, ...] = ("p1",), clock: list[float] | None = None) -> AgentRegistry:
    ticks = clock or [100.0]
    return AgentRegistry(MemoryStore().agents, CONFIGURED, clock=lambda: ticks[0],
                         available_providers=lambda names: [n for n in (names or available) if n in available])


async def test_registered_agents_are_versioned_and_identical_content_is_idempotent() -> None:
    agents = registry()
    first, changed = await agents.register("coder", {"description": "Writes code", "capabilities": ["code"]})
    again, unchanged = await agents.register("coder", {"capabilities": ["code"], "description": "Writes code"})
    second, changed_again = await agents.register("coder", {"description": "Writes code well"})
    assert (first.version, changed, again.version, unchanged, second.version, changed_again) == (
        1, True, 1, False, 2, True)
    assert (await agents.get("coder", 1)).spec.description == "Writes code"
    assert (await agents.get("coder")).source == "registered" and first.uri == "agents://registry/coder"


async def test_an_agent_is_available_while_one_of_its_providers_can_take_a_call() -> None:
    now = [1_000.0]
    config = fake_config(fake_entry("a"), fake_entry("b"), fake_entry("c"))
    fleet = fleet_for(config)
    pool = ProviderPool([(p, fleet(p)) for p in config.providers], MemoryStore().calls, config=config,
                        clock=lambda: now[0])
    members = {m.config.name: m for m in pool.members}
    agents = AgentRegistry(MemoryStore().agents, {"pair": AgentSpec(description="Two providers", providers=("a", "b"))},
                           available_providers=available_providers(pool))
    await agents.load()
    pair = await agents.get("pair")

    def rate_limited(name: str, seconds: float) -> None:  # a 429 with Retry-After: the provider cools down
        members[name].health.started(0)
        members[name].health.failed(RateLimited(name, "slow down", status_code=429, retry_after_s=seconds))

    rate_limited("a", 60)
    assert agents.available(pair)  # b still can
    rate_limited("b", 30)
    assert not agents.available(pair) and [a.name for a in await agents.discover(available_only=True)] == []
    now[0] += 31  # b's cooldown is over, a's is not
    assert agents.available(pair)


async def test_an_agent_the_configuration_drops_is_gone_until_registered_again() -> None:
    store = MemoryStore().agents
    await AgentRegistry(store, CONFIGURED).load()
    later = AgentRegistry(store, {})  # the next start's configuration defines no agents
    await later.load()
    assert await later.list() == [] and await later.discover(["ops"]) == []
    with pytest.raises(UnknownAgent, match="which no longer defines it; its versions stay readable"):
        await later.get("ops")
    assert (await later.get("ops", 1)).source == "config"
    again, stored = await later.register("ops", {"description": "Runs operations", "capabilities": ["ops"]})
    assert (again.version, again.source, stored) == (2, "registered", True)
    assert [a.name for a in await later.list()] == ["ops"]


async def test_a_bad_agent_is_refused_with_every_problem_and_nothing_stored() -> None:
    agents = registry()
    await agents.load()
    with pytest.raises(InvalidAgent, match=r"defined in the configuration \(\[agents.ops\]\)"):
        await agents.register("ops", {"description": "mine now"})
    with pytest.raises(InvalidAgent, match="'auto' is not an agent name"):
        await agents.register("auto", {"description": "x"})
    with pytest.raises(InvalidAgent, match="1-64 of a-z"):
        await agents.register("Bad Name", {"description": "x"})
    with pytest.raises(InvalidAgent) as raised:
        await agents.register("x", {"description": "", "tools": ["no-dot"], "colour": "red"})
    message = str(raised.value)
    assert "(3 problem(s))" in message and "colour: unknown field" in message
    assert "tools: " in message and "description: " in message
    assert [a.name for a in await agents.list()] == ["ops"]
    with pytest.raises(UnknownAgent, match="no agent 'x'; agents: ops"):
        await agents.get("x")


async def test_agents_are_discovered_by_capability_and_minimum_version_and_availability() -> None:
    agents = registry(available=("p1",))
    await agents.load()
    await agents.register("coder", {"description": "v1", "capabilities": ["code", "review"], "providers": ["p2"]})
    await agents.register("coder", {"description": "v2", "capabilities": ["code", "review"], "providers": ["p2"]})
    await agents.register("writer", {"description": "w", "capabilities": ["docs"]})
    assert [a.name for a in await agents.discover(["code"])] == ["coder"]
    assert [a.name for a in await agents.discover(min_version=2)] == ["coder"]
    assert [a.name for a in await agents.discover(["code"], min_version=3)] == []
    assert [a.name for a in await agents.discover(available_only=True)] == ["ops", "writer"]  # p2 is not available


def test_configured_agents_need_slug_names() -> None:
    with pytest.raises(ValueError, match=r"agents\.Ops Team\.\[key\]\s+String should match pattern"):
        Config.model_validate({"agents": {"Ops Team": {"description": "x"}}})
    assert Config.model_validate({"agents": {"ops": {"description": "x"}}}).agents["ops"].description == "x"


def test_the_routing_reply_is_checked_against_the_agent_list() -> None:
    assert parse_choice('```json\n{"agent": "coder", "reason": "code"}\n```', ["coder"]) == ("coder", "code")
    assert parse_choice('{"agent": "coder"}', ["coder"])[1] == "chosen by the routing model"
    for reply, message in (("coder", "no JSON object"), ('{"agent": 3}', "names no agent"),
                           ('{"agent": "poet"}', "'poet', which is not a listed agent"), ("{nope}", "not valid JSON")):
        with pytest.raises(ValueError, match=message):
            parse_choice(reply, ["coder", "general"])
    assert normalize("  Sort A\tlist\n") == "sort a list"


def test_a_plan_is_an_object_with_a_definition_or_just_a_definition() -> None:
    definition = {"name": "w", "steps": []}
    assert parse_reply(json.dumps({"rationale": "why", "definition": definition})) == (definition, "why")
    assert parse_reply("Here it is: " + json.dumps(definition)) == (definition, "")
    with pytest.raises(ValueError, match="no JSON object"):
        parse_reply("I cannot plan that")


def test_agent_and_team_steps_are_validated_with_the_definition() -> None:
    with pytest.raises(InvalidWorkflow) as raised:
        validate({"name": "w", "steps": [
            {"id": "a", "kind": "agent", "with": {"prompt": "x", "tools": ["t"]}},
            {"id": "b", "kind": "team", "with": {"agents": ["one"], "mode": "round-robin", "prompt": "x"}}]})
    problems = "; ".join(raised.value.problems)
    assert "kind 'agent' needs `agent`" in problems and "agent: unknown parameter `tools`" in problems
    assert "a list of 2 to 16 agent names" in problems and "team `mode` is one of sequential" in problems
    assert validate({"name": "w", "steps": [{"id": "a", "kind": "agent", "with": {"agent": "x", "prompt": "y"}}]}
                    ).steps[0].kind == "agent"


async def test_the_planners_cost_estimate_bounds_a_plan() -> None:
    config = fake_config(fake_entry("p", input_cost_per_mtok=1_000.0, output_cost_per_mtok=1_000.0),
                         agents={"a": {"description": "d"}}, planner={"providers": ["p"], "max_repairs": 0})
    fleet = fleet_for(config)
    steps = [{"id": f"s{i}", "kind": "agent", "with": {"agent": "a", "prompt": "go"}} for i in range(3)]
    fleet["p"].script(Reply(text=json.dumps({"name": "w", "steps": steps})))
    async with Client(build_server(config, store_factory=MemoryStore, provider_factory=fleet)) as client:
        result = await client.call_tool("plan_workflow", {"goal": "g", "constraints": {"max_cost_usd": 1.0}})
    assert result.is_error
    assert "the estimated cost is $3.0" in result.content[0].text and "over the limit of $1" in result.content[0].text


async def test_register_agent_stores_versions_that_the_agents_resources_list() -> None:
    config = fake_config(fake_entry("p1"), agents={"ops": {"description": "Runs operations", "providers": ["p1"]}})
    async with Client(build_server(config, store_factory=MemoryStore, provider_factory=fleet_for(config))) as client:
        coder = {"description": "Writes code", "providers": ["nowhere"], "tools": ["github.*"]}
        saved = await client.call_tool("register_agent", {"name": "coder", "agent": coder})
        again = await client.call_tool("register_agent", {"name": "coder", "agent": dict(reversed(coder.items()))})
        refused = await client.call_tool("register_agent", {"name": "ops", "agent": {"description": "Mine"}})
        typo = await client.call_tool("register_agent", {"name": "x", "agent": {"descripton": "x"}})
        index = json.loads((await client.read_resource("agents://registry")).contents[0].text)
        one = json.loads((await client.read_resource("agents://registry/coder")).contents[0].text)
    assert saved.structured_content == {"name": "coder", "version": 1, "changed": True,
                                        "uri": "agents://registry/coder"}
    assert (again.structured_content["version"], again.structured_content["changed"]) == (1, False)
    assert refused.is_error and "defined in the configuration" in refused.content[0].text
    assert typo.is_error and "descripton: unknown field" in typo.content[0].text
    assert [(a["name"], a["source"], a["available"]) for a in index["agents"]] == [
        ("coder", "registered", False), ("ops", "config", True)]  # coder's only provider is not configured
    assert (one["version"], one["tools"], one["providers"]) == (1, ["github.*"], ["nowhere"])


async def test_agents_are_discovered_over_mcp_by_capability_and_minimum_version() -> None:
    config = fake_config(fake_entry("p1"), agents={
        "reviewer": {"description": "Reviews", "capabilities": ["code", "review"]},
        "coder": {"description": "Codes", "capabilities": ["code"]}})
    async with Client(build_server(config, store_factory=MemoryStore, provider_factory=fleet_for(config))) as client:
        for description in ("v1", "v2"):
            await client.call_tool("register_agent", {"name": "tester",
                                                      "agent": {"description": description, "capabilities": ["code"]}})

        async def names(query: str) -> list[str]:
            found = json.loads((await client.read_resource(f"agents://registry?{query}")).contents[0].text)
            assert found["count"] == len(found["agents"])
            return [a["name"] for a in found["agents"]]

        assert await names("capability=code") == ["coder", "reviewer", "tester"]
        assert await names("capability=code,review") == ["reviewer"]
        assert await names("capability=code&min_version=2") == ["tester"]
        assert await names("capability=design") == []
        with pytest.raises(MCPError, match="min_version is a version number"):
            await client.read_resource("agents://registry?min_version=two")
