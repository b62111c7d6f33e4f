"""Metric triggers ([[triggers]]): debounce, cooldown, the provider filter and idempotent run ids; what a
schedule needs before it is saved (full mode, a cron expression, inputs its workflow accepts), and each change of
a workflow's schedules audited under the admin who saved it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from server.config import Config
from server.operations.audit import AuditLog
from server.operations.triggers import MetricTriggers
from server.security import Principal
from server.store.memory import MemoryStore
from server.workflows import StepServices, open_workflows
from server.workflows.model import Definition, InvalidWorkflow
from server.workflows.runtime import MemoryRuntime
from server.workflows.schedules import FULL_MODE_ONLY, schedule_problems, tick_run_id

pytestmark = pytest.mark.anyio


def group(key: str, calls: int = 10, **figures: float) -> Any:
    return SimpleNamespace(key=key, calls=calls, latency_p95_ms=figures.get("latency_p95_ms"),
                           error_rate=figures.get("error_rate"), cost_per_hour_usd=figures.get("cost_per_hour_usd"))


def triggers(**entry: Any) -> tuple[MetricTriggers, list[tuple[str, dict, str]]]:
    started: list[tuple[str, dict, str]] = []

    async def start(workflow: str, inputs: Any, run_id: str) -> str:
        started.append((workflow, dict(inputs), run_id))
        return run_id

    config = Config.model_validate({"triggers": [{"name": "slow", "metric": "latency_p95_ms", "threshold": 500,
                                                  "workflow": "page-oncall", **entry}]})
    return MetricTriggers(config.triggers, start), started


async def test_a_breach_fires_after_the_debounce_and_not_again_within_the_cooldown() -> None:
    fired, started = triggers(debounce_s=60, cooldown_s=600)
    slow = [group("alpha", latency_p95_ms=900)]
    assert await fired.evaluate(slow, 1000.0, 5) == []  # breached, not for long enough
    assert await fired.evaluate([group("alpha", latency_p95_ms=100)], 1030.0, 5) == []  # normal: the wait restarts
    assert await fired.evaluate(slow, 1040.0, 5) == []
    assert await fired.evaluate(slow, 1099.0, 5) == []
    assert await fired.evaluate(slow, 1100.0, 5) == ["trigger-slow-1"]
    assert await fired.evaluate(slow, 1500.0, 5) == []  # cooling down
    assert await fired.evaluate(slow, 1700.0, 5) == ["trigger-slow-2"]
    workflow, inputs, _ = started[0]
    assert workflow == "page-oncall"
    assert inputs == {"trigger": "slow", "metric": "latency_p95_ms", "value": 900, "threshold": 500,
                      "provider": None, "at": 1100.0}


async def test_a_trigger_watches_its_provider_and_needs_enough_calls() -> None:
    fired, _ = triggers(provider="beta", debounce_s=0, cooldown_s=60)
    assert await fired.evaluate([group("alpha", latency_p95_ms=900)], 10.0, 5) == []  # another provider
    assert await fired.evaluate([group("beta", calls=2, latency_p95_ms=900)], 20.0, 5) == []  # too few calls
    assert await fired.evaluate([group("beta", latency_p95_ms=900)], 30.0, 5) == ["trigger-slow-0"]


async def test_a_failed_start_is_logged_and_the_next_breach_tries_again(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    async def refuse(workflow: str, inputs: Any, run_id: str) -> str:
        calls.append(run_id)
        raise InvalidWorkflow(["no saved workflow 'page-oncall'"])

    config = Config.model_validate({"triggers": [{"name": "errors", "metric": "error_rate", "threshold": 0.1,
                                                  "workflow": "page-oncall", "cooldown_s": 0}]})
    fired = MetricTriggers(config.triggers, refuse)
    assert await fired.evaluate([group("a", error_rate=0.5)], 1.0, 5) == []
    assert "trigger errors: workflow page-oncall could not start" in caplog.text
    assert await fired.evaluate([group("a", error_rate=0.5)], 2.0, 5) == []
    assert len(calls) == 2


def test_schedules_are_checked_before_anything_is_saved() -> None:
    definition = Definition.model_validate({
        "name": "nightly", "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "steps": [{"id": "a", "kind": "approval"}],
        "schedules": [{"cron": "0 3 * * *", "inputs": {"n": 1}}, {"cron": "every night", "inputs": {"n": 2}},
                      {"cron": "*/5 * * * * *", "inputs": {}}]})
    problems = schedule_problems(definition, supported=True)
    assert problems[0].startswith("schedules[1].cron: 'every night' is not a cron expression")
    assert problems[1].startswith("schedules[2].inputs:") and "n" in problems[1]
    assert len(problems) == 2
    assert schedule_problems(definition, supported=False) == [FULL_MODE_ONLY]


async def test_a_schedule_is_refused_in_memory_mode_and_nothing_is_saved() -> None:
    store = MemoryStore()
    async with open_workflows(StepServices(), store) as workflows:
        with pytest.raises(InvalidWorkflow) as refused:
            await workflows.save({"name": "nightly", "steps": [{"id": "a", "kind": "approval"}],
                                  "schedules": [{"cron": "0 3 * * *"}]})
    assert refused.value.problems == [FULL_MODE_ONLY]
    assert await store.workflows.get_workflow("nightly") is None


def test_a_tick_has_one_run_id() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 2, 15, 0, 2, tzinfo=UTC)
    assert tick_run_id("nightly", 1, at) == f"tick-nightly-1-{int(at.timestamp())}"


class SchedulingRuntime(MemoryRuntime):
    """The in-memory runtime keeping schedules as a durable one does (what ``set_schedules`` was last given, per
    workflow), with no scheduler firing them."""

    schedules_supported = True

    def __init__(self) -> None:
        super().__init__()
        self.schedules: dict[str, list[dict[str, Any]]] = {}

    def bind_schedules(self, on_tick: Any) -> None:
        pass

    async def set_schedules(self, workflow: str, schedules: Any) -> None:
        self.schedules[workflow] = [dict(s) for s in schedules]
        if not schedules:
            del self.schedules[workflow]

    async def scheduled_workflows(self) -> list[str]:
        return sorted(self.schedules)


async def test_each_schedule_change_is_audited_with_the_admin_and_the_workflow() -> None:
    ops = Principal("key:0123456789ab", "admin")
    store, runtime = MemoryStore(), SchedulingRuntime()
    nightly = {"name": "nightly", "steps": [{"id": "a", "kind": "approval"}],
               "schedules": [{"cron": "0 3 * * *", "inputs": {}}]}
    paused = {**nightly, "schedules": [{"cron": "0 3 * * *", "inputs": {}, "paused": True}]}
    async with open_workflows(StepServices(), store, runtime_factory=lambda body: runtime.running(body.execute),
                              audit=AuditLog(store.audit)) as workflows:
        await workflows.save(nightly, caller=ops)
        assert runtime.schedules["nightly"][0]["paused"] is False
        await workflows.save(paused, caller=ops)
        await workflows.save(paused, caller=ops)  # the same definition: no new version, nothing audited
        await workflows.save({**paused, "steps": [{"id": "b", "kind": "approval"}]}, caller=ops)  # steps only
        assert runtime.schedules["nightly"][0]["paused"] is True
        await workflows.save({**nightly, "schedules": []}, caller=ops)  # removed: also a schedule change
        assert runtime.schedules == {}
    changes = [e for e in await store.audit.audit_of("workflow:nightly") if e.action == "schedule.changed"]
    assert [(e.actor, e.subject, e.id) for e in changes] == [
        (ops.id, "workflow:nightly", f"workflow:nightly:v{v}:schedules") for v in (1, 2, 4)]
    saved = [e.id for e in await store.audit.audit_of("workflow:nightly") if e.action == "workflow.saved"]
    assert saved == [f"workflow:nightly:v{v}" for v in (1, 2, 3, 4)]  # v3 changed its steps, not its schedules
    assert [e.detail["schedules"] for e in changes] == [
        [{"cron": "0 3 * * *", "inputs": {}, "paused": False}], [{"cron": "0 3 * * *", "inputs": {}, "paused": True}],
        []]
