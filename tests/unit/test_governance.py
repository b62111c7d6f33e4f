"""Governance rules ([[governance.rules]]), checked on save and again on start: each of the four kinds refuses a
violating workflow with the violation listed (and nothing saved or started), and lets a compliant one run."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.security import LOCAL, SCHEDULER, Principal
from server.store.memory import MemoryStore
from server.workflows import StepServices, open_workflows
from server.workflows.governance import PolicyViolation, estimate_cost_usd
from tests.fakes import fake_config, fake_entry, fleet_for

pytestmark = pytest.mark.anyio


def rules(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"governance": {"rules": list(entries)}}


async def call(client: Client, tool: str, **arguments: Any) -> tuple[bool, Any]:
    with anyio.fail_after(30):
        result = await client.call_tool(tool, arguments)
    return result.is_error, result.content[0].text if result.is_error else result.structured_content


def ask(step_id: str = "ask", **with_: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "orchestrate", "with": {"prompt": "Say hi", **with_}}


async def until_finished(client: Client, run_id: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            error, status = await call(client, "workflow_run", run_id=run_id)
            assert not error, status
            if status["status"] in ("completed", "failed", "cancelled"):
                return status
            await anyio.sleep(0.01)  # bounded-wait: polling the tool, as a client would; bounded above


async def test_a_tagged_workflow_needs_an_approval_before_any_tool_step() -> None:
    config = fake_config(fake_entry("cheap"), **rules({"kind": "approval_before_tools", "tag": "finance",
                                                       "name": "finance-gate"}))
    store = MemoryStore()
    ungated = {"name": "pay", "tags": ["finance"], "steps": [
        {"id": "pay", "kind": "tool", "with": {"server": "bank", "tool": "transfer"}}]}
    async with Client(build_server(config, store_factory=lambda: store, provider_factory=fleet_for(config))) as c:
        error, text = await call(c, "save_workflow", definition=ungated)
        assert error
        assert "finance-gate (approval_before_tools): steps.pay is a tool step with no approval step upstream" in text
        assert await store.workflows.get_workflow("pay") is None  # nothing saved
        untagged = {**ungated, "name": "pay-untagged", "tags": []}
        error, _ = await call(c, "save_workflow", definition=untagged)
        assert not error  # the rule selects by tag
        gated = {"name": "pay", "tags": ["finance"], "steps": [
            {"id": "ok", "kind": "approval", "with": {"timeout_s": 60}},
            {"id": "pay", "kind": "tool", "depends_on": ["ok"], "on_error": "continue",
             "with": {"server": "bank", "tool": "transfer"}}]}
        error, saved = await call(c, "save_workflow", definition=gated)
        assert not error, saved
        error, started = await call(c, "run_workflow", workflow="pay", wait=False)
        assert not error, started
        with anyio.fail_after(10):
            while (await call(c, "workflow_run", run_id=started["run_id"]))[1]["status"] != "waiting":
                await anyio.sleep(0.01)  # bounded-wait: the run's status, read by request; fail_after bounds it
        error, decided = await call(c, "workflow_run", run_id=started["run_id"], action="approve")
        assert not error, decided
        status = await until_finished(c, started["run_id"])
    assert status["status"] == "completed"
    steps = {s["id"]: s for s in status["steps"]}
    assert steps["ok"]["status"] == "completed"
    assert steps["pay"]["error_class"] == "unknown_server"  # it ran (no downstream server is configured here)


async def test_a_run_estimated_over_the_maximum_cost_is_refused_on_save_and_on_start() -> None:
    priced = fake_entry("pricey", input_cost_per_mtok=10.0, output_cost_per_mtok=30.0)
    capped = fake_config(priced, **rules({"kind": "max_cost_per_run", "max_usd": 1.0}))
    store = MemoryStore()
    costly = {"name": "essay", "steps": [ask(max_tokens=100_000)]}
    fleet = fleet_for(capped)
    async with Client(build_server(capped, store_factory=lambda: store, provider_factory=fleet)) as c:
        error, text = await call(c, "save_workflow", definition=costly)
        assert error
        assert "governance.rules[0] (max_cost_per_run): the estimated cost per run is $3.00" in text
        assert "over the maximum of $1" in text
        error, text = await call(c, "run_workflow", workflow=costly)  # inline: checked on start as well
        assert error and "max_cost_per_run" in text
    assert await store.runs.list_runs() == []  # nothing started
    # Saved where no rule applied, then started where the rule does: refused at the start.
    free = fake_config(priced)
    async with Client(build_server(free, store_factory=lambda: store, provider_factory=fleet_for(free))) as c:
        assert not (await call(c, "save_workflow", definition=costly))[0]
    async with Client(build_server(capped, store_factory=lambda: store, provider_factory=fleet)) as c:
        error, text = await call(c, "run_workflow", workflow="essay")
        assert error and "estimated cost per run is $3.00" in text
        error, saved = await call(c, "save_workflow", definition={"name": "note", "steps": [ask(max_tokens=100)]})
        assert not error, saved
        error, done = await call(c, "run_workflow", workflow="note", wait_s=20)
    assert not error, done
    assert done["status"] == "completed" and fleet["pricey"].requests  # the compliant one ran


def test_the_cost_estimate_counts_attempts_consensus_answers_and_the_dearest_provider() -> None:
    from server.workflows.governance import _steps
    from server.workflows.model import Definition

    config = fake_config(fake_entry("a", input_cost_per_mtok=1.0, output_cost_per_mtok=2.0),
                         fake_entry("b", input_cost_per_mtok=3.0, output_cost_per_mtok=4.0))
    one = Definition.model_validate({"name": "x", "steps": [ask(max_tokens=1000, providers=["a"])]})
    alone = estimate_cost_usd(list(_steps(one, {})), config.providers, None)
    retried = Definition.model_validate({"name": "x", "steps": [
        {**ask(max_tokens=1000, providers=["a"]), "retry": {"max_attempts": 3}}]})
    assert estimate_cost_usd(list(_steps(retried, {})), config.providers, None) == pytest.approx(3 * alone)
    dearest = Definition.model_validate({"name": "x", "steps": [ask(max_tokens=1000)]})  # any provider: b's prices
    assert estimate_cost_usd(list(_steps(dearest, {})), config.providers, None) > 1.5 * alone
    fan = Definition.model_validate({"name": "x", "steps": [
        {"id": "c", "kind": "consensus", "with": {"prompt": "hi", "providers": ["a", "b"], "max_tokens": 1000}}]})
    assert estimate_cost_usd(list(_steps(fan, {})), config.providers, None) > 2 * alone


async def test_model_steps_may_use_only_the_allowed_providers() -> None:
    config = fake_config(fake_entry("cheap"), fake_entry("pricey"),
                         **rules({"kind": "allowed_providers", "workflows": ["digest"], "providers": ["cheap"]}))
    fleet = fleet_for(config)
    store = MemoryStore()
    async with Client(build_server(config, store_factory=lambda: store, provider_factory=fleet)) as c:
        error, text = await call(c, "save_workflow", definition={"name": "digest", "steps": [
            ask("a", providers=["pricey"]), ask("b")]})
        assert error
        assert "(allowed_providers): steps.a uses pricey; allowed: cheap" in text
        assert "(allowed_providers): steps.b must name its `providers`" in text
        error, saved = await call(c, "save_workflow", definition={"name": "digest", "steps": [
            ask("a", providers=["cheap"])]})
        assert not error, saved
        error, done = await call(c, "run_workflow", workflow="digest", wait_s=20)
    assert not error, done
    assert done["status"] == "completed"
    assert {s["id"]: s["output"]["provider"] for s in done["steps"]} == {"a": "cheap"}
    assert not fleet["pricey"].requests


async def test_listed_steps_never_run_unattended() -> None:
    config = fake_config(fake_entry("cheap"), **rules({"kind": "attended_steps", "step_kinds": ["pattern"]}))
    services = StepServices(config=config)
    store = MemoryStore()
    render = {"id": "render", "kind": "pattern", "with": {"pattern": "x"}, "on_error": "continue"}
    async with open_workflows(services, store) as workflows:
        await workflows.save({"name": "report", "steps": [render]})  # saved: a person may run it
        with pytest.raises(PolicyViolation) as refused:
            await workflows.start("report", {}, caller=SCHEDULER)  # a schedule's tick: nobody attends
        assert refused.value.violations == [
            "governance.rules[0] (attended_steps): steps.render (a pattern step) may not run unattended: add an "
            "approval step upstream of it"]
        assert await store.runs.list_runs() == []
        attended, _ = await workflows.start("report", {}, caller=Principal("key:ada", "admin"))
        gated = {"name": "report-gated", "steps": [{"id": "ok", "kind": "approval", "with": {"timeout_s": 60}},
                                                   {**render, "depends_on": ["ok"]}]}
        await workflows.save(gated)
        unattended, _ = await workflows.start("report-gated", {}, caller=SCHEDULER)
        with anyio.fail_after(10):
            while (await workflows.status(unattended, LOCAL)).status != "waiting":
                await anyio.sleep(0.01)  # bounded-wait: the run's status, read by request; fail_after bounds it
        await workflows.decide(unattended, "approved", caller=LOCAL)
        finished = [await workflows.wait(run, 10, caller=LOCAL) for run in (attended, unattended)]
    assert [f.status for f in finished] == ["completed", "completed"]
    assert [s.id for s in finished[1].steps if s.status != "skipped"] == ["ok", "render"]
