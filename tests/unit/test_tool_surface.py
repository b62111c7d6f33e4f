"""The MCP surface as a client sees it (issue 17 points 4-6, issue 16 points 1, 6, 7), through the in-memory MCP
client: the size of ``tools/list``, schemas every client accepts, unknown arguments refused with the closest
name, argument errors in plain words, a subset of tools, and compact results."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from mcp import Client

import tools
from server.app.assembly import build_server
from server.config import Config
from server.pool.providers import Completion, CompletionRequest, Usage
from server.store import CallRecord
from server.store.memory import MemoryStore

pytestmark = pytest.mark.anyio
WHOLE_CAP, VISIBLE_CAP = 16 * 1024, 10 * 1024
"""Issue 17's caps for the whole tools/list result and its model-visible part, with every tool."""
TODAYS_TEN_WHOLE, TODAYS_TEN_VISIBLE = 14_600, 8_000
"""What the ten tools of issue 17 may take, so that two more (register_agent, plan_workflow) fit under the caps."""
AGENT_TOOLS = ("register_agent", "plan_workflow")
"""The two tools of issue 21."""
SAMPLES: dict[str, dict[str, Any]] = {
    "orchestrate": {"prompt": "hi"}, "consensus": {"prompt": "hi"}, "monitor_operations": {},
    "list_providers": {}, "register_pattern": {"name": "p", "template": "t", "description": "d"},
    "search_patterns": {}, "acknowledge_incident": {"incident_id": "inc-0123456789ab"},
    "run_workflow": {"workflow": "w"}, "workflow_run": {}, "save_workflow": {"definition": "name: w"},
    "register_agent": {"name": "a", "agent": {"description": "d"}}, "plan_workflow": {"goal": "g"},
}
"""The required arguments of a call to each tool (the samples add every published default)."""
FREE_FORM = {("register_pattern", "inputSchema.properties.variables.items.properties.default")}
"""Schemas documented as free-form JSON that carry no type (the README's "Tool schemas" paragraph)."""
CONSTRAINING = {"type", "enum", "const", "anyOf", "allOf", "oneOf", "not", "$ref", "properties", "items",
                "required", "additionalProperties", "minimum", "maximum", "exclusiveMinimum", "pattern"}


class EchoProvider:
    def __init__(self, config: Any) -> None:
        self.name, self.model = config.name, config.model

    async def complete(self, request: CompletionRequest) -> Completion:
        return Completion(text=f"[{self.model}] {request.messages[-1].content}", model=self.model, usage=Usage(3, 5))

    async def aclose(self) -> None:
        pass


def config(*names: str) -> Config:
    return Config.model_validate({"providers": [
        {"name": n, "kind": "openai", "model": f"{n}-model", "base_url": "http://127.0.0.1:9/v1"} for n in names]})


def server(*names: str, **kwargs: Any) -> Any:
    return build_server(config(*names), store_factory=kwargs.pop("store_factory", MemoryStore),
                        provider_factory=EchoProvider, **kwargs)


async def listed(**kwargs: Any) -> list[dict[str, Any]]:
    async with Client(server("alpha", **kwargs), mode="legacy") as client:
        result = await client.list_tools()
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)["tools"]


def compact(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def visible(tool: dict[str, Any]) -> dict[str, Any]:
    return {"name": tool["name"], "description": tool["description"], "inputSchema": tool["inputSchema"]}


async def test_tools_list_fits_the_size_caps_with_room_for_two_more_tools() -> None:
    every = await listed()
    assert [t["name"] for t in every] == list(tools.TOOL_NAMES)
    whole, model_visible = compact({"tools": every}), compact([visible(t) for t in every])
    assert whole <= WHOLE_CAP and model_visible <= VISIBLE_CAP, (whole, model_visible)
    ten = [t for t in every if t["name"] not in AGENT_TOOLS]
    assert compact({"tools": ten}) <= TODAYS_TEN_WHOLE and compact([visible(t) for t in ten]) <= TODAYS_TEN_VISIBLE


def walk(node: Any, path: str, found: list[tuple[str, str]]) -> None:
    """The Inspector's --strict portability lint, for what it checks: type lists and schemas that constrain nothing."""
    if not isinstance(node, dict):
        return
    if isinstance(node.get("type"), list):
        found.append(("type-union", path))
    if not set(node) & CONSTRAINING:
        found.append(("untyped", path))
    for key in ("properties", "$defs"):
        for name, sub in (node.get(key) or {}).items():
            walk(sub, f"{path}.{key}.{name}", found)
    for key in ("anyOf", "allOf", "oneOf"):
        for index, sub in enumerate(node.get(key) or ()):
            walk(sub, f"{path}.{key}[{index}]", found)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            walk(node[key], f"{path}.{key}", found)


async def test_every_schema_is_valid_portable_json_schema_and_accepts_sample_arguments_with_defaults() -> None:
    for tool in await listed():
        findings: list[tuple[str, str]] = []
        for kind in ("inputSchema", "outputSchema"):
            schema = tool[kind]
            jsonschema.Draft202012Validator.check_schema(schema)
            walk(schema, kind, findings)
        assert all(rule == "untyped" and (tool["name"], path) in FREE_FORM for rule, path in findings), findings
        schema = tool["inputSchema"]
        assert schema["additionalProperties"] is False
        defaults = {name: sub["default"] for name, sub in schema["properties"].items() if "default" in sub}
        sample = {**defaults, **SAMPLES[tool["name"]]}
        assert jsonschema.Draft202012Validator(schema).is_valid(sample), (tool["name"], sample)
        assert not jsonschema.Draft202012Validator(schema).is_valid({**sample, "unknown_argument": 1})


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_tool_refuses_an_unknown_argument_naming_the_closest_valid_one(mode: str) -> None:
    async with Client(server("alpha"), mode=mode) as client:
        for tool in (await client.list_tools()).tools:
            first = next(iter(tool.input_schema["properties"]), None)
            if first is None:
                result = await client.call_tool(tool.name, {"anything": 1})
                assert result.is_error and "unknown argument `anything`" in result.content[0].text
                continue
            typo = first[:-1] + ("x" if first[-1] != "x" else "y")
            result = await client.call_tool(tool.name, {**SAMPLES[tool.name], typo: 1})
            assert result.is_error, tool.name
            assert f"unknown argument `{typo}`: did you mean `{first}`?" in result.content[0].text
        misspelled = await client.call_tool("orchestrate", {"prompt": "hi", "temprature": 0.2})
        assert misspelled.content[0].text == "orchestrate: unknown argument `temprature`: did you mean `temperature`?"
        goal = await client.call_tool("run_workflow", {"goal": "write release notes"})
        assert goal.is_error and "unknown argument `goal`" in goal.content[0].text and "`workflow`" in goal.content[0].text
        assert "plan_workflow(goal=…)" in goal.content[0].text


async def test_argument_errors_say_in_plain_words_which_argument_what_was_given_and_what_is_allowed() -> None:
    cases = [
        ({"prompt": "hi", "max_tokens": "many"}, 'max_tokens: expected a whole number, got the text "many"'),
        ({"prompt": "hi", "temperature": 3}, "temperature: expected a number from 0 to 2, got the number 3"),
        ({"prompt": "hi", "timeout_s": 9999}, "timeout_s: must be at most 600 (got the number 9999)"),
        ({"prompt": "hi", "strategy": "fastest"}, 'strategy: expected one of "priority", "weighted"'),
        ({"prompt": "hi", "providers": "alpha"}, "providers: expected a list (each text), got the text"),
        ({"prompt": 5}, "prompt: expected text, got the number 5"),
    ]
    async with Client(server("alpha")) as client:
        for arguments, expected in cases:
            result = await client.call_tool("orchestrate", arguments)
            text = result.content[0].text
            assert result.is_error and expected in text, text
            assert "toolArguments" not in text and "pydantic" not in text and "input_value" not in text
        nested = await client.call_tool("register_pattern", {**SAMPLES["register_pattern"],
                                                             "variables": [{"nmae": "a"}]})
        assert "variables[0]: unknown field `nmae`: did you mean `name`?" in nested.content[0].text


async def test_a_subset_of_tools_is_listed_and_a_call_to_another_is_refused_with_the_enabled_ones() -> None:
    async with Client(server("alpha", enabled_tools=["orchestrate", "consensus"])) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["orchestrate", "consensus"]
        refused = await client.call_tool("monitor_operations", {})
        assert refused.is_error
        assert refused.content[0].text.startswith("the tool monitor_operations is not enabled on this server "
                                                  "(enabled: orchestrate, consensus)")
        assert not (await client.call_tool("orchestrate", {"prompt": "hi"})).is_error


async def test_an_unknown_tool_name_is_refused_with_the_valid_ones() -> None:
    from server.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown tool.*orchestrat.*valid: orchestrate, consensus"):
        server("alpha", enabled_tools=["orchestrat"])


async def test_orchestrate_and_consensus_answer_with_a_short_text_first_and_the_structure_once() -> None:
    async with Client(server("alpha", "beta")) as client:
        answer = await client.call_tool("orchestrate", {"prompt": "hi"})
        (text,) = answer.content
        assert text.text.startswith(answer.structured_content["text"] + "\n\n[")
        assert answer.structured_content["continuation_id"] in text.text and "{" not in text.text
        assert "ab_bucket" not in answer.structured_content  # None fields are left out, as the schema says
        agreed = await client.call_tool("consensus", {"prompt": "hi", "providers": ["alpha", "beta"]})
        (text,) = agreed.content
        first = text.text.splitlines()[0]
        assert first.startswith(f"{agreed.structured_content['status']} (agreement ")
        assert "- alpha: [alpha-model] hi" in text.text and "{" not in text.text
        assert len(text.text) < len(json.dumps(agreed.structured_content)) / 2


async def test_monitor_operations_summarises_24_hours_of_5_providers_in_4_kb_by_default() -> None:
    now = 1_800_000_000.0
    store = MemoryStore()
    names = ["alpha", "beta", "gamma", "delta", "epsilon"]
    for minute in range(24 * 60):
        for index, name in enumerate(names):
            store.calls.record_call(CallRecord(
                ts=now - minute * 60, call_id=f"{name}-{minute}", tool="orchestrate", provider=name,
                model=f"{name}-model", status="error" if minute % 17 == index else "ok",
                latency_ms=100.0 + index * 10 + minute % 50, input_tokens=30, output_tokens=50, cost_usd=0.0001))
    mcp = build_server(config(*names), store_factory=lambda: store, provider_factory=EchoProvider,
                       clock=lambda: now)
    async with Client(mcp) as client:
        day = await client.call_tool("monitor_operations", {"window": "24h"})
        default = await client.call_tool("monitor_operations", {})
        series = await client.call_tool("monitor_operations", {"window": "24h", "metrics": ["calls", "series"]})
    for result in (day, default):
        assert not result.is_error
        assert compact(result.model_dump(mode="json", by_alias=True, exclude_none=True)) <= 4096
        groups = {g["key"]: g for g in result.structured_content["groups"]}
        assert set(groups) == set(names) and "series" not in groups["alpha"]
        assert {"calls", "errors", "error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                "input_tokens", "output_tokens", "cost_usd"} <= set(groups["alpha"])
    assert {g["key"]: g["calls"] for g in day.structured_content["groups"]} == {n: 24 * 60 for n in names}
    points = series.structured_content["groups"][0]["series"]
    assert points and all(p["calls"] > 0 for p in points)  # the time series, only when asked, without empty buckets


async def test_a_runs_text_is_a_few_lines_however_many_steps_and_the_structure_has_them_all() -> None:
    import anyio

    approvals = {"name": "gate", "steps": [{"id": f"ok{i}", "kind": "approval"} for i in range(40)]}
    chatty = {"name": "chatty", "steps": [{"id": f"s{i}", "kind": "orchestrate", "with": {"prompt": "x" * 300}}
                                          for i in range(30)],
              "outputs": {f"o{i}": f"{{{{ steps.s{i}.output.text }}}}" for i in range(30)}}
    async with Client(server("alpha")) as client:
        done = await client.call_tool("run_workflow", {"workflow": chatty, "wait_s": 30})
        assert done.structured_content["status"] == "completed", done.content
        lines = done.content[0].text.splitlines()
        run_id = done.structured_content["run_id"]
        assert lines[0] == f"run {run_id} (chatty): completed; 30/30 steps done"
        assert len(lines) == 2 and lines[1].startswith("outputs: {") and lines[1].endswith("structured content)")
        assert len(lines[1]) < 2_100  # 30 answers of 300 characters and more, cut at 2,000
        assert len(done.structured_content["steps"]) == 30 and len(done.structured_content["outputs"]) == 30
        started = await client.call_tool("run_workflow", {"workflow": approvals, "wait": False})
        gate = started.structured_content["run_id"]
        def all_waiting(result: Any) -> bool:  # the run waits once its first approval does; the rest follow
            content = result.structured_content
            return content["status"] == "waiting" and all(step["status"] == "waiting" for step in content["steps"])

        with anyio.fail_after(10):
            while not all_waiting(status := await client.call_tool("workflow_run", {"run_id": gate})):
                await anyio.sleep(0.01)  # bounded-wait: the run's steps, read by request; fail_after bounds it
        text = status.content[0].text
        assert text.splitlines()[0].startswith(f"run {gate} (gate): waiting; ")
        assert "waiting for a decision: ok0, ok1," in text and text.rstrip().endswith("and 30 more")
        assert len(text) < len(json.dumps(status.structured_content)) / 10
        page = await client.call_tool("workflow_run", {"limit": 1})
        first, line = page.content[0].text.splitlines()
        assert first == "1 run(s); more from offset 1" and line.startswith(f"- run {gate} (gate): waiting; ")
