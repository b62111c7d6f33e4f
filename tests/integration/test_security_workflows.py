"""Security of the workflow and incident tools: roles, ownership of run ids (also across a restart with DBOS),
the step-count and duration ceilings, the address policy on tool-step URLs, client tokens never forwarded to
downstream servers, and redacted incident text."""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError

from server.app.assembly import build_server
from server.config import Config, McpServerConfig
from server.simulator import Behaviour, Upstream
from server.store.memory import MemoryStore
from server.security.addresses import AddressPolicy
from server.workflows.downstream import DownstreamServers
from server.workflows.service import RunNotFound
from server.workflows.steps import StepFailed
from tests.conftest import provider_entry
from tests.secure_serving import CANARY, make_key, mcp_client, running_server, write_toml
from tests.integration.test_workflows_runs import runtime  # noqa: F401 - the fixture: in-memory and DBOS runtimes

pytestmark = pytest.mark.anyio


def tool_step(step_id: str, name: str, arguments: dict | None = None) -> dict:
    return {"id": step_id, "kind": "tool", "with": {"server": "down", "tool": name, "arguments": arguments or {}}}


def plain(name: str = "plain", count: int = 1) -> dict:
    steps = [{"id": f"s{i}", "kind": "orchestrate", "with": {"prompt": "say hi"}} for i in range(count)]
    return {"name": name, "steps": steps}


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    with anyio.fail_after(60):
        return await client.call_tool(tool, arguments)


def ok(result: Any) -> dict:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def refused(result: Any) -> str:
    assert result.is_error
    return result.content[0].text


async def test_roles_and_run_ownership_over_http_survive_a_restart(tmp_path: Path, upstream: Upstream,
                                                                   downstream_url: str) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True, "key_cache_s": 0}, mcp_servers__down={"url": downstream_url})
    database = tmp_path / "s.db"
    alice, bob = make_key(config, database, "alice"), make_key(config, database, "bob")
    admin = make_key(config, database, "ops", role="admin")
    probe = {"name": "probe", "steps": [tool_step("h", "headers")], "outputs": {"seen": "{{ steps.h.output.text }}"}}
    wrapper = {"name": "wrapper", "steps": [{"id": "w", "kind": "workflow", "with": {"workflow": "probe"}}]}
    with ExitStack() as stack:
        server = stack.enter_context(running_server(config, database, tmp_path / "server.log"))
        async with mcp_client(server.url, alice) as client:
            assert "save_workflow needs role admin" in refused(await call(client, "save_workflow", definition=probe))
            assert "acknowledge_incident needs role admin" in refused(
                await call(client, "acknowledge_incident", incident_id="inc-0123456789ab"))
            assert "run_workflow with tool steps needs role admin" in refused(
                await call(client, "run_workflow", workflow=probe))
            assert ok(await call(client, "run_workflow", workflow=plain()))["status"] == "completed"
        async with mcp_client(server.url, admin) as client:
            ok(await call(client, "save_workflow", definition=probe))
            ok(await call(client, "save_workflow", definition=wrapper))
            assert "no incident with id" in refused(
                await call(client, "acknowledge_incident", incident_id="inc-0123456789ab"))
            admin_run = ok(await call(client, "run_workflow", workflow={**probe, "name": "inline-probe"}))
            assert admin_run["status"] == "completed", admin_run
        async with mcp_client(server.url, alice) as client:
            inline_wrapper = {"name": "inline-wrapper", "steps": wrapper["steps"]}
            assert "run_workflow with tool steps needs role admin" in refused(
                await call(client, "run_workflow", workflow=inline_wrapper))  # tool steps in a sub-workflow
            mine = ok(await call(client, "run_workflow", workflow="probe", run_id="alice-run-1"))
            assert mine["status"] == "completed", mine
            assert ok(await call(client, "run_workflow", workflow=plain(), run_id="alice-run-2"))["status"] == "completed"
            seen = json.loads(mine["outputs"]["seen"])
            assert "authorization" not in {k.lower() for k in seen}  # the client's token stays here
            assert alice not in mine["outputs"]["seen"] and admin not in admin_run["outputs"]["seen"]
        for restarted in (False, True):
            if restarted:
                server.stop()
                server = stack.enter_context(running_server(config, database, tmp_path / "server2.log"))
            await check_ownership(server.url, alice, bob, admin)


async def check_ownership(url: str, alice: str, bob: str, admin: str) -> None:
    async with mcp_client(url, bob) as client:
        unknown = refused(await call(client, "workflow_run", run_id="never-was"))
        for action in ("status", "cancel", "approve", "reject"):
            text = refused(await call(client, "workflow_run", run_id="alice-run-2", action=action))
            assert text == unknown.replace("never-was", "alice-run-2"), (action, text)
        listing = ok(await call(client, "workflow_run"))
        assert all(r["run_id"] != "alice-run-2" for r in listing["runs"])
        with pytest.raises(MCPError) as caught:
            await client.read_resource("workflows://runs/alice-run-2")
        assert "no run 'alice-run-2'" in str(caught.value)
        # Another principal's run id answers like an unknown one: it starts bob's own run (once: the same id
        # again is his idempotent run), and takes nothing of alice's.
        own = ok(await call(client, "run_workflow", workflow="probe", run_id="alice-run-1"))
        assert own["run_id"] == "alice-run-1" and own["status"] == "completed", own
        assert [r["run_id"] for r in ok(await call(client, "workflow_run"))["runs"]].count("alice-run-1") == 1
    async with mcp_client(url, alice) as client:
        mine = ok(await call(client, "workflow_run", run_id="alice-run-1"))
        assert mine["status"] == "completed" and mine["run_id"] == "alice-run-1"
        assert any(r["run_id"] == "alice-run-1" for r in ok(await call(client, "workflow_run"))["runs"])
        contents = (await client.read_resource("workflows://runs/alice-run-1")).contents
        assert json.loads(contents[0].text)["run_id"] == "alice-run-1"
    async with mcp_client(url, admin) as client:  # admins see both, each under its owner-tagged id
        tagged = [r["run_id"] for r in ok(await call(client, "workflow_run", limit=100))["runs"]
                  if r["run_id"].startswith("alice-run-")]
        assert sorted(run_id.split(":")[0] for run_id in tagged) == ["alice-run-1", "alice-run-1", "alice-run-2"]
        for run_id in tagged:
            assert ok(await call(client, "workflow_run", run_id=run_id))["status"] == "completed"
            contents = (await client.read_resource(f"workflows://runs/{run_id}")).contents
            assert json.loads(contents[0].text)["run_id"] == run_id


@pytest.fixture
def limited(upstream: Upstream) -> Config:
    return Config.model_validate({"providers": [provider_entry(upstream, "primary", model="gpt-sim")],
                                  "limits": {"workflow_max_steps": 3, "workflow_max_duration_s": 0.5}})


async def test_step_ceiling_refuses_at_validation_and_duration_ceiling_stops_the_run(limited: Config,
                                                                                     runtime: Any) -> None:
    async with Client(build_server(limited, store_factory=MemoryStore, workflow_runtime=runtime)) as client:
        text = refused(await call(client, "run_workflow", workflow=plain("big", 4)))
        assert "4 steps" in text and "ceiling of 3" in text
        assert "ceiling of 3" in refused(await call(client, "save_workflow", definition=plain("big", 4)))
        ok(await call(client, "save_workflow", definition=plain("two", 2)))
        nested = {"name": "nested", "steps": [{"id": "a", "kind": "workflow", "with": {"workflow": "two"}},
                                              {"id": "b", "kind": "orchestrate", "with": {"prompt": "x"}}]}
        assert "4 steps" in refused(await call(client, "save_workflow", definition=nested))  # children count
        before = ok(await call(client, "workflow_run", limit=100))["runs"]
        assert all(r["workflow"] != "big" for r in before)  # nothing was started
        gate = {"name": "gate", "steps": [{"id": "g", "kind": "approval", "with": {"timeout_s": 3600}}]}
        run = ok(await call(client, "run_workflow", workflow=gate, wait_s=10))
        assert run["status"] == "failed" and "duration ceiling" in run["error"], run


async def test_tool_step_urls_pass_the_address_policy_before_connecting() -> None:
    resolved: list[str] = []

    def resolver(host: str, port: Any) -> list:
        resolved.append(host)
        return [(2, 1, 6, "", ("169.254.169.254", 0))]

    servers = DownstreamServers({"meta": McpServerConfig(url="http://169.254.169.254/mcp"),
                                 "named": McpServerConfig(url="http://metadata.test/mcp")},
                                policy=AddressPolicy(resolve=resolver))
    for name in ("meta", "named"):
        with pytest.raises(StepFailed) as caught:
            await servers.call(name, "echo", {"text": "x"}, 5)
        assert caught.value.error_class == "address_refused" and "169.254.169.254" in str(caught.value)
    assert "metadata.test" in resolved


def test_a_metadata_address_as_a_tool_server_url_is_refused_when_the_config_loads() -> None:
    with pytest.raises(ValueError, match=r"mcp_servers\.meta\.url: address 169\.254\.169\.254"):
        Config.model_validate({"mcp_servers": {"meta": {"url": "http://169.254.169.254/mcp"}}})
    allowed = Config.model_validate({"mcp_servers": {"meta": {"url": "http://169.254.169.254/mcp"}},
                                     "network": {"allow_addresses": ["169.254.169.254/32"]}})
    assert allowed.mcp_servers["meta"].url == "http://169.254.169.254/mcp"


async def test_incident_text_is_redacted() -> None:
    from tests.unit.test_incidents import Clock, calls, config, service

    class FailingRunner:
        async def __call__(self, name: str, inputs: Any) -> str:
            raise RuntimeError(f"provider said: invalid key {CANARY}")

    cfg = config(error_rate=0.2, responses={"error_rate": [{"action": "run_workflow", "workflow": "triage"}]})
    clock, store = Clock(), MemoryStore()
    incidents = service(cfg, clock, store, run_workflow=FailingRunner())
    calls(store, clock, "a", 4, status="error")
    (opened,) = await incidents.evaluate()
    assert not opened.actions[0].ok and CANARY not in opened.actions[0].detail  # provider error text redacted
    seen = await incidents.acknowledge(opened.id, by=f"ops {CANARY}", note=f"rotated {CANARY} and aiom_0a_b")
    assert CANARY not in (seen.note or "") and CANARY not in (seen.acknowledged_by or "")
    assert CANARY not in json.dumps(await store.incidents.get_incident(opened.id))


async def test_run_listing_pages_over_the_callers_own_runs_only() -> None:
    from server.security import Principal
    from server.workflows import StepServices, open_workflows

    gate = {"name": "gate", "steps": [{"id": "g", "kind": "approval"}]}
    clock = iter(range(1, 1000))
    principals = {name: Principal(f"key:{name}", "user") for name in ("alice", "bob")}
    async with open_workflows(StepServices(), MemoryStore(), clock=lambda: float(next(clock))) as workflows:
        started = {"alice": [], "bob": []}
        for i in range(10):
            owner = "alice" if i % 3 else "bob"
            run_id, _ = await workflows.start(gate, {}, f"r{i}", caller=principals[owner])
            started[owner].append(run_id)
        pages = [await workflows.list(None, 2, offset, principals["alice"]) for offset in range(0, 8, 2)]
        assert [s.run_id for page in pages for s in page] == started["alice"][::-1]
        everyone = [s.run_id for s in await workflows.list(None, 20, 0, None)]  # the local admin: every run
        assert [run_id.split(":")[0] for run_id in everyone] == [f"r{i}" for i in range(9, -1, -1)]
        with pytest.raises(RunNotFound, match="no run 'r0'"):
            await workflows.status("r0", principals["alice"])


async def test_a_users_inline_run_gives_its_agents_no_downstream_tools(tmp_path: Path, upstream: Upstream,
                                                                      downstream_url: str) -> None:
    # An agent step's model may ask for any tool the agent lists: in a non-admin's inline run that would be the
    # `tool` step the run may not have. The agents' tools are known only when the step runs, so it fails there.
    key = uuid.uuid4().hex
    operator = {"description": "Operates tools", "providers": ["primary"], "tools": ["down.fail_times"]}
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True, "key_cache_s": 0}, mcp_servers__down={"url": downstream_url},
                        agents__operator=operator)
    database = tmp_path / "s.db"
    alice, admin = make_key(config, database, "alice"), make_key(config, database, "ops", role="admin")
    ask = {"id": "op", "kind": "agent", "with": {"agent": "operator", "prompt": "Call the tool"}}
    team = {"id": "t", "kind": "team", "with": {"agents": ["operator", "operator"], "prompt": "Call the tool"}}
    with running_server(config, database, tmp_path / "server.log") as server:
        async with mcp_client(server.url, alice) as client:
            runs = [ok(await call(client, "run_workflow", workflow={"name": name, "steps": [step]}, wait_s=30))
                    for name, step in (("agent", ask), ("team", team))]
            planned = refused(await call(client, "plan_workflow", goal="Call the tool",
                                         constraints={"agents": ["operator"]}))
            registering = refused(await call(client, "register_agent", name="mine",
                                             agent={"description": "Mine", "tools": ["down.fail_times"]}))
            saving = refused(await call(client, "plan_workflow", goal="Call the tool", save_as="mine"))
        assert upstream.requests == []  # refused before any model call
        upstream.script("gpt-sim", Behaviour(text=json.dumps({"tool": "down.fail_times",
                                                              "arguments": {"key": key, "times": 0}})),
                        Behaviour(text="done"))
        async with mcp_client(server.url, admin) as client:
            admins = ok(await call(client, "run_workflow", workflow={"name": "agent", "steps": [ask]}, wait_s=30))
            counted = ok(await call(client, "run_workflow", workflow={"name": "count", "steps": [
                tool_step("c", "count", {"key": key})]}, wait_s=30))
    for run in runs:
        assert run["status"] == "failed" and run["steps"][0]["error_class"] == "tool_not_allowed", run
        assert "only when role admin starts it" in run["steps"][0]["error"]
    assert "operator use downstream tools, which only role admin may plan with" in planned
    assert "register_agent needs role admin" in registering
    assert "plan_workflow with save_as needs role admin" in saving
    assert admins["status"] == "completed" and admins["steps"][0]["output"]["tool_calls"] == [
        {"tool": "down.fail_times", "ok": True}]
    assert counted["steps"][0]["output"]["text"] == "1"  # the admin's call only
