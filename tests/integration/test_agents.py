"""Agents and planning (issue 21) through the MCP client, against the scripted upstream (`server/simulator.py`):
routing to an agent, the routing cache and its fallback, plans valid at once, repaired or never valid, a planned
workflow saved and run, team steps with the inputs each agent's model saw, and an agent's tool allowance."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.config import Config
from server.simulator import Behaviour, RecordedRequest, Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry
from tests.integration.test_workflows_runs import wait_done

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]
AGENTS = {
    "general": {"description": "Answers general questions", "system_prompt": "You are a generalist.",
                "providers": ["general-llm"]},
    "coder": {"description": "Writes and fixes code", "system_prompt": "You write code.", "capabilities": ["code"],
              "providers": ["coder-llm"]},
}


def agents_config(upstream: Upstream, agents: dict[str, Any] | None = None, **sections: Any) -> Config:
    return config_for(
        provider_entry(upstream, "general-llm", model="general-model", priority=1),
        provider_entry(upstream, "coder-llm", model="coder-model", priority=2),
        provider_entry(upstream, "router", model="router-model", priority=9),
        provider_entry(upstream, "planner", model="planner-model", priority=9),
        agents=AGENTS if agents is None else agents, agent_routing={"default": "general", "providers": ["router"]},
        planner={"providers": ["planner"], "max_repairs": 2}, **sections)


def server(config: Config) -> Any:
    return build_server(config, store_factory=MemoryStore)


async def call(client: Client, tool: str, **arguments: Any) -> dict:
    with anyio.fail_after(60):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def error(client: Client, tool: str, **arguments: Any) -> str:
    with anyio.fail_after(60):
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    return result.content[0].text


def to(upstream: Upstream, model: str) -> list[RecordedRequest]:
    return [r for r in upstream.requests if r.model == model]


def system_of(request: RecordedRequest) -> str:
    return next((m["content"] for m in request.body["messages"] if m["role"] == "system"), "")


def user_text(request: RecordedRequest, index: int = -1) -> str:
    return [m["content"] for m in request.body["messages"] if m["role"] == "user"][index]


def route_to(agent: str, reason: str = "it fits") -> Behaviour:
    return Behaviour(text=json.dumps({"agent": agent, "reason": reason}))


# -- routing --------------------------------------------------------------------------------------------------


async def test_routing_picks_the_agent_the_routing_model_names(upstream: Upstream) -> None:
    upstream.script("router-model", route_to("coder", "the request is about code"))
    async with Client(server(agents_config(upstream))) as client:
        out = await call(client, "orchestrate", prompt="Fix my Python loop", agent="auto")
    assert out["agent"]["name"] == "coder" and out["agent"]["via"] == "model" and not out["agent"]["cached"]
    assert out["agent"]["reason"] == "the request is about code" and out["agent"]["routing_latency_ms"] > 0
    assert out["provider"] == "coder-llm" and out["text"] == "[coder-model] Fix my Python loop"
    [routing] = to(upstream, "router-model")
    assert routing.body["temperature"] == 0 and routing.body["response_format"] == {"type": "json_object"}
    assert "- general: Answers general questions" in user_text(routing) and "- coder: Writes" in user_text(routing)
    assert "Fix my Python loop" in user_text(routing)
    [answer] = to(upstream, "coder-model")
    assert system_of(answer) == "You write code."


async def test_a_named_agent_answers_without_a_routing_call(upstream: Upstream) -> None:
    async with Client(server(agents_config(upstream))) as client:
        out = await call(client, "orchestrate", prompt="hello", agent="general", system="Be brief.")
        unknown = await error(client, "orchestrate", prompt="hello", agent="nobody")
    assert (out["agent"]["name"], out["agent"]["via"], out["provider"]) == ("general", "named", "general-llm")
    assert to(upstream, "router-model") == []
    assert system_of(to(upstream, "general-model")[0]) == "You are a generalist.\n\nBe brief."
    assert "no agent 'nobody'; agents: coder, general" in unknown


async def test_an_agents_preferred_models_choose_its_providers(upstream: Upstream) -> None:
    agents = {"picky": {"description": "Wants the coder model", "models": ["coder-model"]},
              "lost": {"description": "Wants a model nobody serves", "models": ["gone-model"]}}
    async with Client(server(agents_config(upstream, agents=agents))) as client:
        out = await call(client, "orchestrate", prompt="hello", agent="picky")
        chosen = await call(client, "orchestrate", prompt="hello", agent="picky", providers=["general-llm"])
        lost = await error(client, "orchestrate", prompt="hello", agent="lost")
    assert out["provider"] == "coder-llm"  # not general-llm, which the pool's priorities put first
    assert chosen["provider"] == "general-llm"  # the caller's choice comes first
    assert "prefers model(s) gone-model, which no configured provider serves" in lost
    assert [r.model for r in upstream.requests] == ["coder-model", "general-model"]


async def test_a_cached_decision_makes_no_routing_call(upstream: Upstream) -> None:
    upstream.script("router-model", route_to("coder"))
    async with Client(server(agents_config(upstream))) as client:
        first = await call(client, "orchestrate", prompt="Sort a list in Rust", agent="auto")
        second = await call(client, "orchestrate", prompt="  sort a LIST   in rust ", agent="auto")
    assert first["agent"]["cached"] is False and second["agent"]["cached"] is True
    assert (second["agent"]["name"], second["agent"]["via"], second["agent"]["routing_cost_usd"]) == (
        "coder", "cache", 0.0)
    assert len(to(upstream, "router-model")) == 1 and len(to(upstream, "coder-model")) == 2


@pytest.mark.parametrize("reply", [
    Behaviour(text="I would pick the coder"),  # no JSON
    route_to("poet"),  # not a listed agent
    Behaviour(status=500),  # the routing provider fails
], ids=["prose", "unlisted-agent", "provider-error"])
async def test_a_routing_failure_falls_back_to_the_default_agent(upstream: Upstream, reply: Behaviour) -> None:
    upstream.script("router-model", reply, repeat=True)
    async with Client(server(agents_config(upstream, routing={"max_retries": 0}))) as client:
        out = await call(client, "orchestrate", prompt="What is the capital of France?", agent="auto")
    assert (out["agent"]["name"], out["agent"]["via"], out["provider"]) == ("general", "fallback", "general-llm")
    assert out["agent"]["reason"].startswith("routing failed (")
    assert len(to(upstream, "router-model")) >= 1 and len(to(upstream, "general-model")) == 1


async def test_one_agent_is_chosen_without_a_routing_model(upstream: Upstream) -> None:
    async with Client(server(agents_config(upstream, agents={"general": AGENTS["general"]}))) as client:
        out = await call(client, "orchestrate", prompt="hi", agent="auto")
    assert (out["agent"]["name"], out["agent"]["via"]) == ("general", "single")
    assert to(upstream, "router-model") == []


# -- planning -------------------------------------------------------------------------------------------------

TWO_STEPS = {"name": "notes", "steps": [
    {"id": "draft", "kind": "agent", "with": {"agent": "general", "prompt": "Draft release notes"}},
    {"id": "check", "kind": "agent", "depends_on": ["draft"],
     "with": {"agent": "coder", "prompt": "Check: {{ steps.draft.output.text }}"}}],
    "outputs": {"notes": "{{ steps.check.output.text }}"}}


def plan_reply(definition: dict[str, Any], rationale: str = "draft, then check") -> Behaviour:
    return Behaviour(text=json.dumps({"rationale": rationale, "definition": definition}))


async def test_a_plan_valid_at_once_comes_back_with_its_diagram_and_rationale(upstream: Upstream) -> None:
    upstream.script("planner-model", plan_reply(TWO_STEPS))
    async with Client(server(agents_config(upstream))) as client:
        out = await call(client, "plan_workflow", goal="Write release notes for v2")
    assert out["attempts"] == 1 and out["rationale"] == "draft, then check"
    assert [s["id"] for s in out["definition"]["steps"]] == ["draft", "check"]
    assert out["mermaid"].startswith("flowchart TD") and "s0 --> s1" in out["mermaid"]
    [request] = to(upstream, "planner-model")
    assert request.body["temperature"] == 0 and "Goal: Write release notes for v2" in user_text(request)
    assert "- coder: Writes and fixes code" in user_text(request)


async def test_a_bare_definition_is_accepted_as_a_plan(upstream: Upstream) -> None:
    upstream.script("planner-model", Behaviour(text=json.dumps(TWO_STEPS)))
    async with Client(server(agents_config(upstream))) as client:
        out = await call(client, "plan_workflow", goal="Write release notes")
    assert out["attempts"] == 1 and out["rationale"] == "" and out["definition"]["name"] == "notes"


async def test_an_invalid_plan_is_repaired_with_the_validators_problems(upstream: Upstream) -> None:
    broken = {**TWO_STEPS, "steps": [TWO_STEPS["steps"][0], {**TWO_STEPS["steps"][1], "depends_on": ["drafted"]}]}
    upstream.script("planner-model", plan_reply(broken), plan_reply(TWO_STEPS))
    async with Client(server(agents_config(upstream))) as client:
        out = await call(client, "plan_workflow", goal="Write release notes")
    assert out["attempts"] == 2
    first, second = to(upstream, "planner-model")
    repair = user_text(second)
    assert "unknown step 'drafted'" in repair and "Reply with the corrected plan" in repair
    assert [m["role"] for m in second.body["messages"] if m["role"] != "system"] == ["user", "assistant", "user"]


async def test_a_reply_that_is_not_json_counts_as_a_draft_to_repair(upstream: Upstream) -> None:
    upstream.script("planner-model", Behaviour(text='{"rationale": "cut off', finish_reason="length"),
                    plan_reply(TWO_STEPS))
    async with Client(server(agents_config(upstream, routing={"max_retries": 0}))) as client:
        out = await call(client, "plan_workflow", goal="Write release notes")
    assert out["attempts"] == 2
    retry = user_text(to(upstream, "planner-model")[1])
    assert retry.startswith("Goal: Write release notes") and "Your last reply: the reply was not valid JSON" in retry


async def test_a_plan_never_valid_within_the_repairs_gives_a_clear_error(upstream: Upstream) -> None:
    unknown_agent = {**TWO_STEPS, "steps": [{**TWO_STEPS["steps"][0], "with": {"agent": "poet", "prompt": "x"}}],
                     "outputs": {}}
    upstream.script("planner-model", plan_reply(unknown_agent), repeat=True)
    async with Client(server(agents_config(upstream))) as client:
        message = await error(client, "plan_workflow", goal="Write a poem")
    assert "no valid plan in 3 draft(s) (2 repair(s) allowed)" in message
    assert "agent 'poet' is not one of the agents listed (coder, general)" in message
    assert len(to(upstream, "planner-model")) == 3


async def test_plans_keep_to_the_constraints_and_to_what_the_caller_may_run(upstream: Upstream) -> None:
    with_tool = {**TWO_STEPS, "steps": [*TWO_STEPS["steps"], {"id": "post", "kind": "tool", "depends_on": ["check"],
                                                             "with": {"server": "down", "tool": "echo"}}]}
    upstream.script("planner-model", plan_reply(with_tool), repeat=True)
    async with Client(server(agents_config(upstream))) as client:
        message = await error(client, "plan_workflow", goal="Notes", constraints={"max_steps": 2},
                              agents=["general", "coder"])
        typo = await error(client, "plan_workflow", goal="Notes", constraints={"max_step": 2})
    assert "3 steps; the plan may have at most 2" in message
    assert "tool 'down.echo' is not one of the tools listed (none: use agent steps)" in message
    assert "constraints.max_step: unknown constraint (did you mean `max_steps`?)" in typo


async def test_a_planned_workflow_is_saved_and_run_to_completion(upstream: Upstream) -> None:
    upstream.script("planner-model", plan_reply(TWO_STEPS))
    upstream.script("general-model", Behaviour(text="v2 adds agents"))
    async with Client(server(agents_config(upstream))) as client:
        out = await call(client, "plan_workflow", goal="Release notes", save_as="release-notes", run=True)
        assert (out["saved_as"], out["version"], out["definition"]["name"]) == ("release-notes", 1, "release-notes")
        final = await wait_done(client, out["run_id"])
        saved = await client.read_resource("workflows://definitions/release-notes")
    assert final["status"] == "completed", final
    assert final["outputs"] == {"notes": "[coder-model] Check: v2 adds agents"}
    assert json.loads(saved.contents[0].text)["version"] == 1


async def test_run_workflow_refuses_a_goal_naming_plan_workflow(upstream: Upstream) -> None:
    async with Client(server(agents_config(upstream))) as client:
        message = await error(client, "run_workflow", workflow="x", goal="Write release notes")
    assert "unknown argument `goal`" in message and "plan_workflow(goal=…)" in message


# -- agents in workflows ----------------------------------------------------------------------------------------


def team(mode: str, **extra: Any) -> dict[str, Any]:
    return {"name": f"team-{mode}", "steps": [{"id": "t", "kind": "team", "with": {
        "agents": ["general", "coder"], "mode": mode, "prompt": "Name the capital of France", **extra}}],
        "outputs": {"text": "{{ steps.t.output.text }}"}}


async def run(client: Client, definition: dict[str, Any]) -> dict[str, Any]:
    return await call(client, "run_workflow", workflow=definition, wait_s=30)


async def test_a_sequential_team_shows_each_agent_the_previous_answer(upstream: Upstream) -> None:
    upstream.script("general-model", Behaviour(text="Paris, I think"))
    async with Client(server(agents_config(upstream))) as client:
        out = await run(client, team("sequential"))
    assert out["status"] == "completed", out
    [first], [second] = to(upstream, "general-model"), to(upstream, "coder-model")
    assert user_text(first) == "Name the capital of France"
    assert user_text(second) == ("Name the capital of France\n\nThe previous answer (from agent general):\n"
                                 "Paris, I think")
    assert (system_of(first), system_of(second)) == ("You are a generalist.", "You write code.")
    step = out["steps"][0]["output"]
    assert [a["agent"] for a in step["answers"]] == ["general", "coder"]
    assert out["outputs"]["text"] == f"[coder-model] {user_text(second)}"


async def test_a_parallel_team_collects_every_answer_from_the_same_prompt(upstream: Upstream) -> None:
    async with Client(server(agents_config(upstream))) as client:
        out = await run(client, team("parallel"))
    assert out["status"] == "completed", out
    assert [user_text(r) for r in upstream.requests] == ["Name the capital of France"] * 2
    answers = {a["agent"]: a["text"] for a in out["steps"][0]["output"]["answers"]}
    assert answers == {"general": "[general-model] Name the capital of France",
                       "coder": "[coder-model] Name the capital of France"}


async def test_a_consensus_team_aggregates_the_agents_answers(upstream: Upstream) -> None:
    upstream.script("general-model", Behaviour(text="Paris."))
    upstream.script("coder-model", Behaviour(text="paris"))
    async with Client(server(agents_config(upstream))) as client:
        agreed = await run(client, team("consensus", method="vote"))
        upstream.script("general-model", Behaviour(text="Paris"))
        upstream.script("coder-model", Behaviour(text="Lyon"))
        split = await run(client, {**team("consensus", method="vote", threshold=0.75), "name": "split"})
    assert [user_text(r) for r in upstream.requests] == ["Name the capital of France"] * 4
    output = agreed["steps"][0]["output"]
    assert (output["status"], output["agreement"], output["text"]) == ("consensus", 1.0, "Paris.")
    assert split["steps"][0]["output"]["status"] == "no_consensus"


async def test_an_agents_tool_allowance_is_enforced(upstream: Upstream) -> None:
    key = uuid.uuid4().hex
    operator = {"description": "Operates tools", "providers": ["general-llm"], "tools": ["local.echo"]}
    config = agents_config(upstream, agents={**AGENTS, "operator": operator}, mcp_servers={"local": {
        "command": sys.executable, "args": [str(REPO / "tests" / "downstream_mcp.py")], "env": {"PYTHONPATH": str(REPO)}}})
    upstream.script("general-model", Behaviour(text=json.dumps({"tool": "local.echo", "arguments": {"text": "pong"}})),
                    Behaviour(text="The tool said pong"),
                    Behaviour(text=json.dumps({"tool": "local.fail_times", "arguments": {"key": key, "times": 0}})))
    step = {"id": "op", "kind": "agent", "with": {"agent": "operator", "prompt": "Ping the echo tool"}}
    async with Client(server(config)) as client:
        allowed = await run(client, {"name": "allowed", "steps": [step]})
        refused = await run(client, {"name": "refused", "steps": [step]})
        counted = await run(client, {"name": "count", "steps": [
            {"id": "c", "kind": "tool", "with": {"server": "local", "tool": "count", "arguments": {"key": key}}}]})
    output = allowed["steps"][0]["output"]
    assert allowed["status"] == "completed" and output["text"] == "The tool said pong"
    assert output["tool_calls"] == [{"tool": "local.echo", "ok": True}]
    first, second, _ = to(upstream, "general-model")
    assert "local.echo" in system_of(first) and user_text(second).startswith("Result of local.echo:")
    assert "pong" in user_text(second)
    assert refused["status"] == "failed" and refused["steps"][0]["error_class"] == "tool_not_allowed"
    assert "may not use" in refused["steps"][0]["error"]
    assert counted["steps"][0]["output"]["text"] == "0"  # the refused tool was never called


async def test_auto_with_no_agent_whose_providers_are_configured_is_refused_clearly(upstream: Upstream) -> None:
    # An agent registered while the server ran another configuration names providers this one does not have:
    # routing to it would fail later with "unknown provider(s)", naming providers the caller never chose.
    async with Client(server(agents_config(upstream, agents={}))) as client:
        await call(client, "register_agent", name="elsewhere",
                   agent={"description": "From another setup", "providers": ["ghost-llm"]})
        text = await error(client, "orchestrate", prompt="hi", agent="auto")
    assert "no agent can answer now" in text and "elsewhere (ghost-llm)" in text, text
    assert "configured providers: general-llm, coder-llm, planner, router" in text, text  # pool order
    assert upstream.requests == []
