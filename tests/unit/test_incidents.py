"""Alerts and incidents: opening, acknowledging, auto-resolving, automated responses, the schedule, and the MCP
surface (acknowledge_incident, operations:// resources and their update notifications)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.subscriptions import ResourceUpdated

from server.app.assembly import build_server, open_dependencies
from server.config import Config
from server.operations.incidents import IncidentResolved, IncidentService, UnknownIncident
from server.pool.pool import ProviderPool
from server.pool.providers import Completion
from server.store import CallRecord
from server.store.memory import MemoryStore

pytestmark = pytest.mark.anyio
START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class FakeProvider:
    """Never called here: incidents act on the pool's state, not on providers."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, request: Any) -> Completion:
        return Completion(text="ok", model="m")

    async def aclose(self) -> None:
        pass


class Workflows:
    """The run_workflow hook, recording what it was asked to run."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Mapping[str, Any]]] = []

    async def __call__(self, name: str, inputs: Mapping[str, Any]) -> str:
        self.runs.append((name, inputs))
        return f"run-{len(self.runs)}"


def config(**alerts: Any) -> Config:
    return Config.model_validate({
        "providers": [{"name": "a", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "priority": 1},
                      {"name": "b", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                       "priority": 2}],
        "alerts": {"window": "5m", "cooldown_s": 300, "min_calls": 3, **alerts},
    })


def service(cfg: Config, clock: Clock, store: MemoryStore, **kwargs: Any) -> IncidentService:
    pool = ProviderPool([(p, FakeProvider(p.name)) for p in cfg.providers], store.calls, config=cfg, clock=clock)
    return IncidentService(store.incidents, store.calls, pool, cfg, clock=clock, **kwargs)


def calls(store: MemoryStore, clock: Clock, provider: str, n: int, *, status: str = "ok", latency_ms: float = 100,
          cost_usd: float = 0.0) -> None:
    for i in range(n):
        store.calls.record_call(CallRecord(ts=clock.now - 1 - i, call_id=str(i), tool="orchestrate", provider=provider,
                                     model="m", status=status, latency_ms=latency_ms, cost_usd=cost_usd))  # type: ignore[arg-type]


async def test_incident_opens_is_acknowledged_and_resolves_after_the_cooldown() -> None:
    clock, store = Clock(), MemoryStore()
    incidents = service(config(error_rate=0.2), clock, store)
    heard: list[int] = []

    async def listener() -> None:
        heard.append(1)

    incidents.add_listener(listener)
    calls(store, clock, "a", 4, status="error")
    calls(store, clock, "b", 4)
    (opened,) = await incidents.evaluate()
    assert (opened.metric, opened.provider, opened.status, opened.value, opened.threshold) == (
        "error_rate", "a", "open", 1.0, 0.2)
    assert opened.severity == "critical" and opened.opened_at == START and opened.id.startswith("inc-")
    clock.now += 30
    assert await incidents.evaluate() == []  # still breaching: the same incident, no new one
    assert len(await incidents.active()) == 1
    acknowledged = await incidents.acknowledge(opened.id, by="ops", note="looking")
    assert (acknowledged.status, acknowledged.acknowledged_by, acknowledged.note) == ("acknowledged", "ops", "looking")
    clock.now += 6 * 60  # the bad calls left the 5-minute window; last breach was 6 minutes ago
    (resolved,) = await incidents.evaluate()
    assert (resolved.id, resolved.status, resolved.resolved_at) == (opened.id, "resolved", clock.now)
    assert await incidents.active() == []
    assert len(heard) == 3  # opened, acknowledged, resolved
    with pytest.raises(IncidentResolved, match="already resolved"):
        await incidents.acknowledge(opened.id)
    with pytest.raises(UnknownIncident, match="no incident with id"):
        await incidents.acknowledge("inc-000000000000")


async def test_short_normal_spells_do_not_resolve_and_few_calls_open_nothing() -> None:
    clock, store = Clock(), MemoryStore()
    incidents = service(config(latency_p95_ms=500, cooldown_s=600), clock, store)
    calls(store, clock, "a", 2, latency_ms=5000)  # below min_calls
    assert await incidents.evaluate() == []
    calls(store, clock, "a", 3, latency_ms=5000)
    (opened,) = await incidents.evaluate()
    assert opened.metric == "latency_p95_ms" and opened.severity == "critical"
    clock.now += 400  # normal for 400 s < cooldown 600 s
    assert await incidents.evaluate() == []
    clock.now += 200
    assert [i.status for i in await incidents.evaluate()] == ["resolved"]


async def test_each_automated_response_is_taken_and_recorded() -> None:
    clock, store, workflows = Clock(), MemoryStore(), Workflows()
    cfg = config(cost_per_hour_usd=1.0, responses={"cost_per_hour_usd": [
        {"action": "open_circuit", "duration_s": 120},
        {"action": "demote", "demote_by": 50, "duration_s": 600},
        {"action": "run_workflow", "workflow": "incident-triage"},
    ]})
    incidents = service(cfg, clock, store, run_workflow=workflows)
    calls(store, clock, "a", 1, cost_usd=1.0)  # $1 in 5 minutes = $12/h
    (opened,) = await incidents.evaluate()
    assert opened.metric == "cost_per_hour_usd" and opened.value == pytest.approx(12.0)
    assert [(a.action, a.ok) for a in opened.actions] == [("open_circuit", True), ("demote", True),
                                                          ("run_workflow", True)]
    member_a = next(m for m in incidents.pool.members if m.config.name == "a")
    assert member_a.health.unavailable() is not None and member_a.health.state == "open"
    assert member_a.config.priority == 51
    assert incidents.pool.choose(2) == ["b"]  # the open circuit keeps a out
    ((name, inputs),) = workflows.runs
    assert name == "incident-triage" and inputs["incident"]["id"] == opened.id
    assert "run-1" in opened.actions[2].detail
    stored = (await incidents.recent())[0]
    assert [a.action for a in stored.actions] == ["open_circuit", "demote", "run_workflow"]
    clock.now += 121  # the circuit half-opens for a probe; the demotion holds until 600 s
    assert member_a.health.unavailable() is None
    await incidents.evaluate()
    assert member_a.config.priority == 51
    clock.now += 480
    await incidents.evaluate()
    assert member_a.config.priority == 1


async def test_a_response_that_cannot_run_is_recorded_as_failed() -> None:
    clock, store = Clock(), MemoryStore()
    cfg = config(error_rate=0.5, responses={"error_rate": [{"action": "run_workflow", "workflow": "triage"}]})
    incidents = service(cfg, clock, store)  # no workflow hook
    calls(store, clock, "b", 3, status="error")
    (opened,) = await incidents.evaluate()
    (action,) = opened.actions
    assert not action.ok and "workflows are not available" in action.detail


async def test_the_schedule_evaluates_and_rolls_up_on_its_interval() -> None:
    clock, store = Clock(), MemoryStore()
    cfg = Config.model_validate({**config(error_rate=0.1).model_dump(exclude={"source"}),
                                 "operations": {"raw_retention_s": 3600, "rollup_interval_s": 60}})
    waits: list[float] = []
    done = anyio.Event()

    async def sleep(seconds: float) -> None:  # bounded-wait: a fake clock, it sleeps for no time
        waits.append(seconds)
        clock.now += seconds
        if len(waits) == 4:
            done.set()
            await anyio.sleep_forever()

    incidents = service(cfg, clock, store, sleep=sleep)
    store.calls.record_call(CallRecord(ts=START - 7200, call_id="old", tool="orchestrate", provider="a", model="m",
                                 status="ok", latency_ms=1.0))
    calls(store, clock, "a", 3, status="error")
    async with anyio.create_task_group() as group:
        group.start_soon(incidents.run)
        with anyio.fail_after(5):
            await done.wait()
        group.cancel_scope.cancel()
    assert waits == [30.0] * 4
    assert len(await incidents.recent()) == 1
    assert all(r.ts >= START - 3600 for r in store.calls.records)  # the 2-hour-old record was rolled up


def test_bad_alert_settings_are_refused() -> None:
    from pydantic import ValidationError

    for alerts, message in (({"responses": {"error_rate": [{"action": "run_workflow"}]}}, "needs `workflow`"),
                            ({"responses": {"latency": [{"action": "demote"}]}}, "latency"),
                            ({"window": "soon"}, "window"), ({"error_rate": 2}, "error_rate")):
        with pytest.raises(ValidationError, match=message):
            config(**alerts)
    with pytest.raises(ValidationError, match="alerts.providers names unknown provider"):
        config(providers={"zzz": {"error_rate": 0.1}})


async def test_incidents_through_mcp_tool_resources_and_notifications() -> None:
    clock, store = Clock(), MemoryStore()
    cfg = config(error_rate=0.2)
    async with open_dependencies(cfg, store_factory=lambda: store, provider_factory=lambda p: FakeProvider(p.name),
                                 clock=clock) as deps:
        server = build_server(cfg, store_factory=lambda: store, shared=deps, clock=clock)
        async with Client(server) as client:
            uris = {str(r.uri) for r in (await client.list_resources()).resources}
            assert {"operations://summary", "operations://incidents"} <= uris
            async with client.listen(resource_subscriptions=["operations://incidents"]) as events:
                calls(store, clock, "a", 5, status="error")
                assert deps.incidents is not None
                (opened,) = await deps.incidents.evaluate()
                with anyio.fail_after(5):
                    async for event in events:
                        if isinstance(event, ResourceUpdated) and event.uri == "operations://incidents":
                            break
            listed = (await client.read_resource("operations://incidents")).contents[0].text
            assert opened.id in listed
            summary = await client.call_tool("monitor_operations", {"window": "15m"})
            assert [i["id"] for i in summary.structured_content["incidents"]] == [opened.id]
            ack = await client.call_tool("acknowledge_incident", {"incident_id": opened.id, "note": "on it"})
            assert not ack.is_error and ack.structured_content["status"] == "acknowledged"
            unknown = await client.call_tool("acknowledge_incident", {"incident_id": "inc-123456789abc"})
            assert unknown.is_error and "no incident with id" in unknown.content[0].text
            malformed = await client.call_tool("acknowledge_incident", {"incident_id": "drop table"})
            assert malformed.is_error
            assert (await deps.incidents.active())[0].status == "acknowledged"


async def test_handshake_era_clients_subscribe_and_hear_incident_updates() -> None:
    from mcp.shared.exceptions import MCPDeprecationWarning
    from mcp_types import ResourceUpdatedNotification

    clock, store = Clock(), MemoryStore()
    cfg = config(error_rate=0.2)
    heard = anyio.Event()
    received: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            received.append(str(message.params.uri))
            heard.set()

    async with open_dependencies(cfg, store_factory=lambda: store, provider_factory=lambda p: FakeProvider(p.name),
                                 clock=clock) as deps:
        server = build_server(cfg, store_factory=lambda: store, shared=deps, clock=clock)
        async with Client(server, mode="legacy", message_handler=on_message) as client:
            assert client.server_capabilities.resources.subscribe
            with pytest.warns(MCPDeprecationWarning):  # as handshake-era hosts still do
                await client.subscribe_resource("operations://incidents")
            calls(store, clock, "a", 5, status="error")
            assert deps.incidents is not None
            await deps.incidents.evaluate()
            with anyio.fail_after(5):
                await heard.wait()
            assert received == ["operations://incidents"]
            with pytest.warns(MCPDeprecationWarning):
                await client.unsubscribe_resource("operations://incidents")


async def test_a_metric_trigger_starts_its_workflow_from_the_alert_evaluation_without_any_threshold() -> None:
    from server.operations.triggers import MetricTriggers

    clock, store = Clock(), MemoryStore()
    cfg = config().model_copy(update={"triggers": Config.model_validate({"triggers": [
        {"name": "slow-a", "metric": "latency_p95_ms", "threshold": 500, "provider": "a", "workflow": "page",
         "debounce_s": 30, "cooldown_s": 600}]}).triggers})
    started: list[tuple[str, str]] = []

    async def start(workflow: str, inputs: Mapping[str, Any], run_id: str) -> str:
        started.append((workflow, run_id))
        return run_id

    incidents = service(cfg, clock, store, triggers=MetricTriggers(cfg.triggers, start))
    calls(store, clock, "a", 5, latency_ms=900)
    calls(store, clock, "b", 5, latency_ms=900)
    assert await incidents.evaluate() == []  # no [alerts] threshold: no incident, but the trigger watches
    assert started == []  # breached, not yet for debounce_s
    clock.now += 30
    calls(store, clock, "a", 5, latency_ms=900)
    await incidents.evaluate()
    assert started == [("page", f"trigger-slow-a-{int(clock.now // 600)}")]


async def test_incident_actions_are_audited_under_who_took_them() -> None:
    from server.operations.audit import AuditLog

    clock, store = Clock(), MemoryStore()
    audit = AuditLog(store.audit, clock=clock)
    incidents = service(config(error_rate=0.2, responses={"error_rate": [{"action": "open_circuit"}]}), clock, store,
                        audit=audit)
    calls(store, clock, "a", 4, status="error")
    (opened,) = await incidents.evaluate()
    await incidents.acknowledge(opened.id, by="the on-call", note="looking", actor="key:ops")
    trail = await store.audit.audit_of(f"incident:{opened.id}")
    assert [(e.action, e.actor) for e in trail] == [("incident.open_circuit", "system:incidents"),
                                                   ("incident.acknowledged", "key:ops")]
    assert trail[0].detail["ok"] is True and trail[1].detail == {"by": "the on-call", "note": "looking"}


async def test_a_cost_per_hour_trigger_starts_its_saved_workflow_under_the_triggers_principal() -> None:
    from server.operations.audit import digest
    from server.security import METRIC_TRIGGERS
    from tests.fakes import fleet_for

    clock, store = Clock(), MemoryStore()
    cfg = config().model_copy(update={"triggers": Config.model_validate({"triggers": [
        {"name": "spend", "metric": "cost_per_hour_usd", "threshold": 5.0, "workflow": "cost-triage",
         "cooldown_s": 600}]}).triggers})
    triage = {"name": "cost-triage", "steps": [
        {"id": "note", "kind": "orchestrate",
         "with": {"prompt": "spend {{ inputs.value }} over {{ inputs.threshold }}"}}],
        "outputs": {"said": "{{ steps.note.output.text }}"}}
    async with open_dependencies(cfg, store_factory=lambda: store, provider_factory=fleet_for(cfg),
                                 clock=clock) as deps:
        assert deps.workflows is not None and deps.incidents is not None
        await deps.workflows.save(triage)
        calls(store, clock, "a", 1, cost_usd=0.2)  # $0.20 in the 5-minute window: $2.40 an hour, under $5
        await deps.incidents.evaluate()
        assert await store.runs.list_runs() == []
        calls(store, clock, "a", 1, cost_usd=0.3)  # $0.50: $6 an hour (one call is enough for a cost figure)
        await deps.incidents.evaluate()
        (run,) = await store.runs.list_runs()
        assert (run.workflow, run.owner) == ("cost-triage", "system:triggers")
        shown = f"trigger-spend-{int(clock.now // 600)}"
        with anyio.fail_after(10):
            done = await deps.workflows.wait(shown, 10, caller=METRIC_TRIGGERS)
        assert done.status == "completed", done
        assert done.outputs["said"].endswith("spend 6.0 over 5.0")  # the figures reached the run as its inputs
        (started,) = [e for e in await store.audit.audit_of(run.run_id) if e.action == "run.started"]
        assert started.actor == "system:triggers"
        assert started.input_sha256 == digest({"trigger": "spend", "metric": "cost_per_hour_usd", "value": 6.0,
                                               "threshold": 5.0, "provider": None, "at": clock.now})
        clock.now += 60  # still over, but cooling down: no second run
        await deps.incidents.evaluate()
        assert len(await store.runs.list_runs()) == 1
