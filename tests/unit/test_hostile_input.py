"""Hostile input: property-based tests over every tool's arguments and the workflow definition validator
(hypothesis).

Each tool gets arbitrary argument objects: schema-shaped (every property, any JSON value) and free-form
(unknown keys, deep nesting, huge and odd strings). Properties: the call returns a result (never a protocol
error or a dropped connection), an error result is one we meant (never the SDK's bare "Error executing tool
X", which is what an unhandled exception becomes), and the stored state is intact afterwards (SQLite
integrity check, a sentinel pattern and conversation unchanged, the built-in library complete).

The validator property: whatever the definition (schema-shaped, free-form JSON, JSON or YAML text), parsing
either returns a definition (whose Mermaid diagram and step order can be drawn) or raises ``InvalidWorkflow``;
nothing else.

Cases per tool (and for the validator): ``HYPOTHESIS_PROFILE=full`` runs 10,000 (the issue's bar); the default profile runs 300 so the
suite stays fast in CI. The README gives the measured times of both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from knowledge.library import builtin_patterns
from server.app.assembly import build_server
from server.config import Config
from server.pool.providers import Completion, CompletionRequest, Usage
from server.store import PatternRecord
from server.store.sqlite import SQLiteStore

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("full", parent=settings.get_profile("ci"), max_examples=10_000)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
pytestmark = pytest.mark.timeout(0 if PROFILE == "full" else 300)  # full: minutes per tool (see the README)

TOOLS = ["orchestrate", "consensus", "register_pattern", "search_patterns", "monitor_operations", "list_providers",
         "run_workflow", "workflow_run", "save_workflow", "acknowledge_incident"]
SENTINEL = PatternRecord(name="zz-sentinel-pattern", version=1, description="kept intact",
                         template="Keep {{ this }} as it is.", variables=({"name": "this", "description": "",
                                                                           "required": True, "default": None},))


class EchoProvider:
    """A provider that answers at once (no network: the properties are about the server, not the upstream)."""

    def __init__(self, config) -> None:
        self.name, self.model = config.name, config.model

    async def complete(self, request: CompletionRequest) -> Completion:
        last = request.messages[-1].content
        return Completion(text=f"[{self.model}] {last[:200]}", model=self.model, usage=Usage(3, 5))

    async def aclose(self) -> None:
        pass


def hostile_config() -> Config:
    providers = [{"name": n, "kind": "openai", "model": f"{n}-model", "base_url": "http://127.0.0.1:9/v1",
                  "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0} for n in ("alpha", "beta", "gamma")]
    return Config.model_validate({"providers": providers, "cache": {"enabled": True},
                                  "guardrails": {"blocked_input_patterns": ["(?i)forbidden"], "redact_pii": True,
                                                 "blocked_output_patterns": ["NEVER-SAY-THIS"]}})


odd_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", " ", "{{", "}}", "{{ x }}", "\\{{", "{{ a.b.c }}", "\x00", "\ud7ff", "../../etc/passwd",
                     "' OR 1=1 --", "%s%n", "a" * 5000, "🙂" * 300, "forbidden", "NEVER-SAY-THIS",
                     "me@example.com 4111 1111 1111 1111", "alpha", "beta", "priority", "vote", "1h", "15m",
                     "code-review", "zz-sentinel-pattern", "similarity", "json", "\u202e"]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), odd_text),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(odd_text, children, max_size=5)),
    max_leaves=20,
)


def arguments_for(schema: dict) -> st.SearchStrategy[dict]:
    properties = list(schema.get("properties", {}))
    shaped = st.fixed_dictionaries({}, optional={name: json_values for name in properties})
    free = st.dictionaries(st.one_of(st.sampled_from(properties or ["x"]), odd_text), json_values, max_size=6)
    return st.one_of(shaped, shaped, free)


@pytest.fixture
def hostile_store(tmp_path: Path):
    return tmp_path / "hostile.db"


async def _seed(path: Path) -> None:
    store = SQLiteStore(path)
    try:
        await store.patterns.put_pattern(SENTINEL)
        await store.conversations.append_turns("sentinel-conversation", [("user", "hi"), ("assistant", "hello")],
                                               1.0)
    finally:
        await store.aclose()


async def _check_intact(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SQLiteStore(path)
    try:
        kept = await store.patterns.get_pattern(SENTINEL.name)
        assert kept is not None and (kept.template, kept.description) == (SENTINEL.template, SENTINEL.description)
        assert await store.conversations.load_turns("sentinel-conversation") == [("user", "hi"), ("assistant", "hello")]
        names = {p.name for p in await store.patterns.list_patterns()}
        assert {p.name for p in builtin_patterns()} <= names
    finally:
        await store.aclose()


@pytest.mark.parametrize("tool", TOOLS)
def test_no_argument_crashes_a_tool_or_damages_state(tool: str, hostile_store: Path) -> None:
    anyio.run(_seed, hostile_store)
    config = hostile_config()
    mcp = build_server(config, store_factory=lambda: SQLiteStore(hostile_store), provider_factory=EchoProvider)
    schema = next(t for t in anyio.run(mcp.list_tools) if t.name == tool).input_schema
    failures: list[tuple[dict, str]] = []

    async def run_all() -> int:
        calls = 0
        async with Client(mcp, raise_exceptions=False) as client:

            @settings(settings.get_profile(PROFILE))
            @given(arguments=arguments_for(schema))
            def one_case(arguments: dict) -> None:
                nonlocal calls
                calls += 1
                result = anyio.from_thread.run(client.call_tool, tool, arguments)
                text = result.content[0].text if result.is_error and result.content else ""
                if result.is_error and text.strip() in (f"Error executing tool {tool}", ""):
                    failures.append((arguments, text))
                assert not (result.is_error and text.strip() == f"Error executing tool {tool}"), arguments

            await anyio.to_thread.run_sync(one_case)
        return calls

    calls = anyio.run(run_all)
    assert not failures, failures[:3]
    assert calls >= settings.get_profile(PROFILE).max_examples
    anyio.run(_check_intact, hostile_store)


step_ids = st.one_of(st.sampled_from(["a", "b", "c", "a.b", "", "1x"]), odd_text)
step_kinds = st.one_of(st.sampled_from(["orchestrate", "consensus", "pattern", "tool", "workflow", "approval"]),
                       odd_text)
step_params = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "prompt": st.sampled_from(["{{ inputs.x }}", "{{ steps.a.output.text }}", "{{ steps.zz.output }}", "{{",
                                   "hi"]),
        "pattern": odd_text, "variables": json_values, "server": odd_text, "tool": odd_text,
        "arguments": json_values, "workflow": odd_text, "timeout_s": json_values, "question": odd_text}),
)
conditions = st.one_of(json_values, st.fixed_dictionaries({"path": st.sampled_from(
    ["steps.a.output.text", "inputs.x", "nowhere", ""]), "op": st.one_of(st.sampled_from(
        ["eq", "ne", "contains", "gt", "lt", "exists", "matches", "in"]), odd_text)}, optional={"value": json_values}))
steps = st.fixed_dictionaries({"id": step_ids, "kind": step_kinds}, optional={
    "depends_on": st.lists(step_ids, max_size=3), "with": step_params, "when": conditions,
    "retry": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "max_attempts": json_values, "backoff": json_values, "retry_on": json_values})),
    "timeout_s": json_values, "on_error": st.one_of(st.sampled_from(["fail", "skip", "continue"]), odd_text),
    "x-unknown": json_values})
# Steps close to valid, so that many cases pass the schema and reach the semantic checks (cycles, references,
# templates, conditions) and, when they pass those too, the Mermaid diagram and the step order.
near_ids = st.sampled_from(["a", "b", "c", "d"])
templates = st.sampled_from(["hi", "{{ inputs.x }}", "{{ steps.a.output.text }}", "{{ steps.b.output }}", "{{",
                             "{{ steps.zz.output }}", "{{ inputs }}", "{{ a.b }}", "}}{{"])
near_params = st.one_of(
    st.fixed_dictionaries({"prompt": templates}),
    st.fixed_dictionaries({"pattern": st.sampled_from(["say", "{{ inputs.p }}"]), "variables": json_values}),
    st.fixed_dictionaries({"server": odd_text, "tool": odd_text}, optional={"arguments": json_values}),
    st.fixed_dictionaries({}, optional={"timeout_s": st.one_of(st.floats(0, 10), odd_text)}),
    st.fixed_dictionaries({"workflow": st.sampled_from(["child", "{{ inputs.w }}"])}),
)
near_steps = st.fixed_dictionaries(
    {"id": near_ids, "kind": st.sampled_from(["orchestrate", "consensus", "pattern", "tool", "workflow",
                                              "approval"]), "with": near_params},
    optional={"depends_on": st.lists(near_ids, max_size=3), "when": conditions,
              "on_error": st.sampled_from(["fail", "skip", "continue"]),
              "retry": st.fixed_dictionaries({"max_attempts": st.integers(0, 12)}),
              "timeout_s": st.one_of(st.floats(-1, 100), st.none())})
hostile_definitions = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["ok-name", "Bad Name", ""]), odd_text)},
    optional={"steps": st.one_of(st.lists(steps, max_size=6), st.lists(near_steps, min_size=1, max_size=6)),
              "inputs": json_values, "outputs": json_values, "max_parallel": json_values, "description": odd_text,
              "unknown": json_values})
near_definitions = st.fixed_dictionaries(
    {"name": st.sampled_from(["near", "near-2"]), "steps": st.lists(near_steps, min_size=1, max_size=6)},
    optional={"inputs": st.just({"type": "object", "properties": {"x": {"type": "string"}}}),
              "outputs": st.dictionaries(st.sampled_from(["o", "p"]), templates),
              "max_parallel": st.integers(0, 300)})
definitions = st.one_of(hostile_definitions, near_definitions)

@settings(settings.get_profile(PROFILE))
@given(source=st.one_of(definitions, definitions, json_values, odd_text,
                        definitions.map(lambda d: json.dumps(d, ensure_ascii=False)),
                        definitions.map(lambda d: yaml_text(d))))
def test_the_workflow_validator_only_ever_raises_invalid_workflow(source: object) -> None:
    from server.workflows.model import InvalidWorkflow, mermaid, parse_definition, topological_order

    try:
        definition = parse_definition(source)  # type: ignore[arg-type]
    except InvalidWorkflow as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    assert set(topological_order(definition)) == {s.id for s in definition.steps}
    assert mermaid(definition).startswith("flowchart")


def yaml_text(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, allow_unicode=True)
