"""Workflow runs through MCP, on the in-memory runtime and on DBOS (one DBOS instance for the session): linear,
fan-out/fan-in, conditions, retries with backoff, timeouts, on_error, approvals, sub-workflows, tool steps,
validation errors, cancellation, `wait_s` expiry, idempotent run ids."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.config import Config
from server.simulator import Upstream
from server.store.memory import MemoryStore
from tests.conftest import provider_entry
from tests.integration.test_patterns_mcp import error
from tests.services import until

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "dbos"])
def runtime(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return None
    request.getfixturevalue("dbos_launched")
    from server.workflows.dbos_runtime import dbos_runtime

    return dbos_runtime(launch=False)


@pytest.fixture
def config(upstream: Upstream, downstream_url: str) -> Config:
    return Config.model_validate({"providers": [provider_entry(upstream, "primary", model="gpt-sim")],
                                  "mcp_servers": {"down": {"url": downstream_url}}})


@pytest.fixture
async def client(config: Config, runtime: Any) -> AsyncIterator[Client]:
    async with Client(build_server(config, store_factory=MemoryStore, workflow_runtime=runtime)) as c:
        await call(c, "register_pattern", name="say", template="{{ text }}", description="Say the text")
        yield c


async def call(client: Client, tool: str, **arguments: Any) -> dict:
    with anyio.fail_after(30):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def say(id: str, text: str, *deps: str, **extra: Any) -> dict:
    return {"id": id, "kind": "pattern", "depends_on": list(deps), "with": {"pattern": "say", "variables": {"text": text}},
            **extra}


def tool(id: str, name: str, arguments: dict, *deps: str, **extra: Any) -> dict:
    return {"id": id, "kind": "tool", "depends_on": list(deps),
            "with": {"server": "down", "tool": name, "arguments": arguments}, **extra}


def steps_of(result: dict) -> dict[str, dict]:
    return {s["id"]: s for s in result["steps"]}


def key() -> str:
    return uuid.uuid4().hex


async def test_linear_run_passes_outputs_along(client: Client) -> None:
    out = await call(client, "run_workflow", workflow={
        "name": "linear", "inputs": {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]},
        "steps": [say("a", "hello {{ inputs.who }}"), say("b", "{{ steps.a.output.text }}!", "a"),
                  tool("c", "echo", {"text": "{{ steps.b.output.text }}?"}, "b")],
        "outputs": {"final": "{{ steps.c.output.text }}", "whole": "{{ steps.a.output }}"}}, inputs={"who": "Ada"})
    assert out["status"] == "completed", out
    assert out["outputs"]["final"] == "hello Ada!?"
    assert out["outputs"]["whole"]["pattern"] == "say"
    assert [s["status"] for s in out["steps"]] == ["completed"] * 3
    assert out["progress"]["done"] == out["progress"]["total"] == 3


async def test_fan_out_fan_in_runs_branches_in_parallel(client: Client) -> None:
    branches = [tool(f"b{i}", "sleep", {"seconds": 0.6}) for i in range(4)]
    out = await call(client, "run_workflow", workflow={
        "name": "fan", "steps": [*branches, tool("join", "add", {"a": 1, "b": 2}, *[b["id"] for b in branches])],
        "outputs": {"sum": "{{ steps.join.output.structured.sum }}"}})
    assert out["status"] == "completed" and out["outputs"]["sum"] == 3.0, (out["error"], out["steps"])
    # In parallel: every branch started before any branch ended (the recorded step times, not the wall clock,
    # so a loaded machine cannot make this fail); the join started after the last branch ended.
    ran = {step["id"]: step for step in out["steps"]}
    starts, ends = [ran[b["id"]]["started_at"] for b in branches], [ran[b["id"]]["ended_at"] for b in branches]
    assert max(starts) < min(ends), (starts, ends)
    assert ran["join"]["started_at"] >= max(ends)
    assert out["steps"][-1]["id"] == "join"


async def test_conditions_pick_a_branch_and_skip_its_downstream(client: Client) -> None:
    out = await call(client, "run_workflow", workflow={
        "name": "cond", "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "steps": [say("check", "big"),
                  say("big", "yes", "check", when={"all": [{"path": "inputs.n", "op": "gt", "value": 10},
                                                           {"path": "steps.check.output.text", "op": "eq", "value": "big"}]}),
                  say("small", "no", "check", when={"path": "inputs.n", "op": "le", "value": 10}),
                  say("after_small", "x", "small")],
        "outputs": {"big": "{{ steps.big.status }}"}}, inputs={"n": 42})
    steps = steps_of(out)
    assert (steps["big"]["status"], steps["small"]["status"], steps["after_small"]["status"]) == \
        ("completed", "skipped", "skipped")
    assert steps["small"]["reason"] == "condition is false"
    assert out["outputs"] == {"big": "completed"}


async def test_retries_back_off_then_succeed(client: Client) -> None:
    k = key()
    out = await call(client, "run_workflow", workflow={"name": "retry", "steps": [
        tool("flaky", "fail_times", {"key": k, "times": 2}, retry={"max_attempts": 3, "retry_on": ["tool_error"],
                                                                      "backoff": {"initial_s": 0.1, "factor": 2}})]})
    flaky = steps_of(out)["flaky"]
    assert (out["status"], flaky["attempts"], flaky["output"]["text"]) == ("completed", 3, "ok after 3 calls")
    assert flaky["duration_ms"] >= 300  # 0.1 s + 0.2 s of backoff


async def test_retries_stop_at_max_attempts_and_only_on_listed_errors(client: Client) -> None:
    k = key()
    out = await call(client, "run_workflow", workflow={"name": "retry2", "steps": [
        tool("flaky", "fail_times", {"key": k, "times": 5}, retry={"max_attempts": 2, "retry_on": ["tool_error"],
                                                                      "backoff": 0.01}),
        tool("once", "boom", {}, retry={"max_attempts": 5, "retry_on": ["timeout"]}, on_error="continue")]})
    steps = steps_of(out)
    assert out["status"] == "failed" and "flaky" in out["error"]
    assert (steps["flaky"]["attempts"], steps["flaky"]["error_class"]) == (2, "tool_error")


async def test_step_timeout_fails_the_step(client: Client) -> None:
    out = await call(client, "run_workflow", workflow={"name": "slow", "steps": [
        tool("slow", "sleep", {"seconds": 10}, timeout_s=0.3, on_error="continue"), say("next", "went on", "slow")],
        "outputs": {"cls": "{{ steps.slow.error_class }}"}})
    steps = steps_of(out)
    assert out["status"] == "completed"
    assert steps["slow"]["status"] == "failed" and steps["slow"]["error_class"] in ("step_timeout", "timeout")
    assert steps["next"]["status"] == "completed" and steps["slow"]["duration_ms"] < 3000


@pytest.mark.parametrize("on_error", ["fail", "skip", "continue"])
async def test_on_error_variants(client: Client, on_error: str) -> None:
    out = await call(client, "run_workflow", workflow={"name": "errs", "steps": [
        tool("bad", "boom", {}, on_error=on_error), say("after", "{{ steps.bad.status }}", "bad"), say("other", "x")]})
    steps = steps_of(out)
    assert steps["bad"]["status"] == "failed" and steps["bad"]["error_class"] == "tool_error"
    if on_error == "fail":
        assert out["status"] == "failed" and "bad" in out["error"]
        assert steps["after"]["status"] == "not_run"
    elif on_error == "skip":
        assert out["status"] == "completed" and steps["after"]["status"] == "skipped"
    else:
        assert out["status"] == "completed" and steps["after"]["output"]["text"] == "failed"


async def test_approval_waits_for_a_decision(client: Client) -> None:
    definition = {"name": "gate", "max_parallel": 1, "steps": [say("draft", "text"),
                                            {"id": "ok", "kind": "approval", "depends_on": ["draft"],
                                             "with": {"message": "Publish?", "timeout_s": 60}},
                                            say("publish", "published", "ok"), say("side", "other", "draft")],
                  "outputs": {"by": "{{ steps.ok.output.by }}"}}
    out = await call(client, "run_workflow", workflow=definition, wait_s=0.5)
    assert out["status"] == "waiting" and steps_of(out)["ok"]["status"] == "waiting"
    assert steps_of(out)["side"]["status"] == "completed"  # a waiting approval holds no max_parallel slot
    listed = await call(client, "workflow_run", status="waiting")
    assert out["run_id"] in [r["run_id"] for r in listed["runs"]]
    decided = await call(client, "workflow_run", run_id=out["run_id"], action="approve")
    assert steps_of(decided)["ok"]["status"] in ("completed",)
    final = await wait_done(client, out["run_id"])
    assert final["status"] == "completed" and final["outputs"] == {"by": "local"}  # the caller: never an argument
    again = await error(client, "workflow_run", run_id=out["run_id"], action="approve")
    assert "no step waiting" in again


async def test_rejection_and_approval_timeout_fail_the_step(client: Client) -> None:
    definition = {"name": "gate2", "steps": [{"id": "ok", "kind": "approval", "with": {"timeout_s": 60}},
                                             {"id": "t", "kind": "approval", "with": {"timeout_s": 0.2},
                                              "on_error": "continue"}]}
    out = await call(client, "run_workflow", workflow=definition, wait_s=1)
    assert steps_of(out)["t"]["error_class"] == "approval_timeout"
    rejected = await call(client, "workflow_run", run_id=out["run_id"], action="reject", step="ok", comment="no")
    final = await wait_done(client, rejected["run_id"])
    assert final["status"] == "failed" and steps_of(final)["ok"]["error_class"] == "rejected"


async def test_sub_workflows_run_as_steps(client: Client) -> None:
    await call(client, "save_workflow", definition={
        "name": "child", "inputs": {"type": "object", "properties": {"x": {"type": "string"}}},
        "steps": [say("inner", "child got {{ inputs.x }}")], "outputs": {"said": "{{ steps.inner.output.text }}"}})
    out = await call(client, "run_workflow", workflow={"name": "parent", "steps": [
        say("first", "one"),
        {"id": "sub", "kind": "workflow", "depends_on": ["first"],
         "with": {"workflow": "child", "inputs": {"x": "{{ steps.first.output.text }}"}}}],
        "outputs": {"said": "{{ steps.sub.output.said }}"}})
    assert out["status"] == "completed" and out["outputs"] == {"said": "child got one"}
    assert [s["id"] for s in out["steps"]] == ["first", "sub.inner", "sub"]
    loop = await error(client, "save_workflow", definition={"name": "child", "steps": [
        {"id": "again", "kind": "workflow", "with": {"workflow": "child"}}]})
    assert "cycle" in loop


async def test_orchestrate_step_calls_the_provider_pool(client: Client) -> None:
    out = await call(client, "run_workflow", workflow={"name": "ask", "steps": [
        {"id": "ask", "kind": "orchestrate", "with": {"prompt": "Hi {{ inputs.n }}"}}],
        "outputs": {"text": "{{ steps.ask.output.text }}", "provider": "{{ steps.ask.output.provider }}"}},
        inputs={"n": 1})
    assert out["outputs"] == {"text": "[gpt-sim] Hi 1", "provider": "primary"}
    by_workflow = await call(client, "monitor_operations", group_by="workflow")
    assert {g["key"]: g["calls"] for g in by_workflow["groups"]}.get("ask") == 1  # calls carry the workflow


async def test_validation_errors_list_every_problem_and_start_nothing(client: Client) -> None:
    message = await error(client, "run_workflow", workflow={"name": "bad", "steps": [
        say("a", "x", "ghost"), say("a", "y"), {"id": "c", "kind": "nope"}]})
    assert "unknown step 'ghost'" in message and "duplicate step id 'a'" in message and "unknown kind 'nope'" in message
    assert "no saved workflow 'missing'" in await error(client, "run_workflow", workflow="missing")
    bad_inputs = await error(client, "run_workflow", workflow={
        "name": "typed", "inputs": {"type": "object", "required": ["n"]}, "steps": [say("a", "x")]}, inputs={})
    assert "inputs" in bad_inputs and "'n' is required" in bad_inputs
    listed = (await call(client, "workflow_run", limit=100))["runs"]
    assert not [r for r in listed if r["workflow"] in ("bad", "typed")]


async def test_cancellation_stops_a_run(client: Client) -> None:
    out = await call(client, "run_workflow", workflow={"name": "long", "steps": [
        tool("slow", "sleep", {"seconds": 20}), say("never", "x", "slow")]}, wait=False)
    assert out["status"] in ("pending", "running")
    async def slow_running() -> bool:
        return steps_of(await call(client, "workflow_run", run_id=out["run_id"]))["slow"]["status"] == "running"

    await until(slow_running, 10, "step slow running", interval_s=0.02)
    cancelled = await call(client, "workflow_run", run_id=out["run_id"], action="cancel")
    assert cancelled["status"] == "cancelled"
    assert steps_of(cancelled)["never"]["status"] == "not_run"
    assert "already cancelled" in await error(client, "workflow_run", run_id=out["run_id"], action="cancel")


async def test_wait_s_expiry_returns_the_run_id_and_the_run_finishes(client: Client) -> None:
    out = await call(client, "run_workflow", workflow={"name": "later", "steps": [
        tool("slow", "sleep", {"seconds": 0.8}), say("done", "finished", "slow")],
        "outputs": {"text": "{{ steps.done.output.text }}"}}, wait_s=0.1)
    assert out["status"] == "running" and out["run_id"]
    final = await wait_done(client, out["run_id"])
    assert final["status"] == "completed" and final["outputs"] == {"text": "finished"}


async def test_same_run_id_runs_once_and_other_inputs_are_refused(client: Client) -> None:
    k, run_id = key(), f"idem-{key()}"
    definition = {"name": "once", "inputs": {"type": "object"}, "steps": [tool("t", "fail_times", {"key": k, "times": 0})]}
    first = await call(client, "run_workflow", workflow=definition, inputs={"v": 1}, run_id=run_id)
    second = await call(client, "run_workflow", workflow=definition, inputs={"v": 1}, run_id=run_id)
    assert first["status"] == second["status"] == "completed"
    count = await call(client, "run_workflow", workflow={"name": "count", "steps": [
        tool("c", "count", {"key": k})]}, )
    assert steps_of(count)["c"]["output"]["text"] == "1"
    assert "different workflow or inputs" in await error(client, "run_workflow", workflow=definition,
                                                         inputs={"v": 2}, run_id=run_id)


async def test_progress_is_reported_per_step(config: Config, runtime: Any) -> None:
    seen: list[tuple[float, float | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total))

    async with Client(build_server(config, store_factory=MemoryStore, workflow_runtime=runtime)) as c:
        with anyio.fail_after(20):
            result = await c.call_tool("run_workflow", {"workflow": {"name": "p", "steps": [
                tool("a", "sleep", {"seconds": 0.1}), tool("b", "sleep", {"seconds": 0.1}, "a")]}},
                progress_callback=progress)
    assert result.structured_content["status"] == "completed"
    assert seen[-1] == (2, 2) and len(seen) >= 2


async def wait_done(client: Client, run_id: str) -> dict:
    async def finished() -> dict | None:
        out = await call(client, "workflow_run", run_id=run_id)
        return out if out["status"] in ("completed", "failed", "cancelled") else None

    return await until(finished, 20, f"run {run_id} finished")


async def test_saved_workflows_run_by_name_and_are_resources(client: Client) -> None:
    saved = await call(client, "save_workflow", definition="name: greet\nsteps:\n  - id: hi\n    kind: pattern\n"
                                                           "    with: {pattern: say, variables: {text: hello}}\n"
                                                           "outputs: {said: '{{ steps.hi.output.text }}'}\n")
    assert (saved["name"], saved["version"], saved["changed"]) == ("greet", 1, True)
    assert (await call(client, "save_workflow", definition={"name": "greet", "steps": [
        say("hi", "hello")], "outputs": {"said": "{{ steps.hi.output.text }}"}}))["changed"] is False
    out = await call(client, "run_workflow", workflow="greet")
    assert out["outputs"] == {"said": "hello"}
    definition = (await client.read_resource("workflows://definitions/greet")).contents[0].text
    assert '"mermaid": "flowchart TD' in definition
    run = (await client.read_resource(f"workflows://runs/{out['run_id']}")).contents[0].text
    assert '"status": "completed"' in run
    listing = (await client.read_resource("workflows://definitions")).contents[0].text
    assert '"greet"' in listing


async def test_a_client_giving_up_on_the_wait_does_not_cancel_the_run(client: Client) -> None:
    run_id = f"giveup-{key()}"
    with anyio.move_on_after(0.3):
        await client.call_tool("run_workflow", {"workflow": {"name": "bg", "steps": [
            tool("slow", "sleep", {"seconds": 0.8})], "outputs": {"t": "{{ steps.slow.output.text }}"}},
            "run_id": run_id})
    final = await wait_done(client, run_id)
    assert final["status"] == "completed" and final["outputs"] == {"t": "slept"}


async def test_dbos_runs_carry_the_pinned_application_version(config: Config, dbos_launched: None) -> None:
    from dbos import DBOS

    from server.workflows.dbos_runtime import APPLICATION_VERSION, dbos_runtime

    async with Client(build_server(config, store_factory=MemoryStore, workflow_runtime=dbos_runtime(launch=False))) as c:
        await call(c, "register_pattern", name="say", template="{{ text }}", description="Say the text")
        out = await call(c, "run_workflow", workflow={"name": "v", "steps": [say("a", "x")]})
    status = await DBOS.get_workflow_status_async(out["run_id"])
    assert status.app_version == APPLICATION_VERSION
    steps = await DBOS.list_workflow_steps_async(out["run_id"])
    assert [s["function_name"] for s in steps] == ["a"]  # DBOS's own record of the step, named by its DAG id
