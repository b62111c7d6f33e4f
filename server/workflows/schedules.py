"""Schedules of saved workflows, on DBOS's scheduled workflows (full mode only).

A saved definition carries ``schedules: [{cron, inputs, paused}]`` (:class:`server.workflows.model.Schedule`).
Saving it makes DBOS's schedules of that workflow match (:meth:`DbosRuntime.set_schedules`): DBOS keeps them in
its system database, every replica's scheduler fires them, and each tick's DBOS workflow has the id
``sched-<workflow>.<index>-<tick time>``, so a tick runs once however many replicas fire it. The tick starts the
run through the workflow service like any other start (governance, ceilings, the run record, the audit trail),
under the system principal :data:`SCHEDULER`, with the run id ``tick-<workflow>-<index>-<tick Unix seconds>``
(the same tick started again attaches to its run). Pausing and resuming is saving the definition again with
``paused`` changed. When the server starts, the saved definitions and DBOS's schedules are reconciled (a save
whose schedule update did not reach DBOS is applied then).

Missed ticks: ticks that fall while no replica runs are skipped, not made up (DBOS's ``automatic_backfill`` is
off): after downtime the next tick on the cron runs on time, and a long outage does not start a burst of runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from server.errors import OrchestrationError
from server.security import SCHEDULER
from server.workflows.inputs import check_inputs
from server.workflows.model import Definition, InvalidWorkflow

if TYPE_CHECKING:
    from server.store import WorkflowStore
    from server.workflows.service import WorkflowService

logger = logging.getLogger(__name__)
FULL_MODE_ONLY = ("schedules need full mode (the durable DBOS runtime); this server runs workflows in memory: "
                  "remove `schedules`, or run without --simple and with [workflows] runtime = \"dbos\"")


def schedule_problems(definition: Definition, supported: bool) -> list[str]:
    """What is wrong with the definition's schedules: full mode, each ``cron`` (croniter's syntax, five or six
    fields) and each ``inputs`` against the definition's inputs schema."""
    if not definition.schedules:
        return []
    if not supported:
        return [FULL_MODE_ONLY]
    from croniter import croniter  # DBOS's own cron library (full mode)

    problems = []
    for index, schedule in enumerate(definition.schedules):
        where = f"schedules[{index}]"
        if len(schedule.cron.split()) not in (5, 6) or not croniter.is_valid(schedule.cron, second_at_beginning=True):
            problems.append(f"{where}.cron: {schedule.cron!r} is not a cron expression (five fields, minute first, or "
                            "six, seconds first; e.g. \"0 9 * * 1-5\")")
        try:
            check_inputs(definition, schedule.inputs)
        except InvalidWorkflow as exc:
            problems += [f"{where}.inputs: {p}" for p in exc.problems]
    return problems


def tick_run_id(workflow: str, index: int, scheduled_at: datetime) -> str:
    return f"tick-{workflow}-{index}-{int(scheduled_at.timestamp())}"


async def start_tick(service: WorkflowService, context: Mapping[str, Any], scheduled_at: datetime) -> str:
    """Start the run of one tick (DBOS's scheduled workflow calls this once per tick). Returns its run id, or
    ``""`` when the run was refused (the workflow is gone, governance or a ceiling refuses it: logged at WARNING;
    the next tick tries again)."""
    workflow, index = str(context["workflow"]), int(context["index"])
    run_id = tick_run_id(workflow, index, scheduled_at)
    try:
        shown, started = await service.start(workflow, dict(context.get("inputs") or {}), run_id, caller=SCHEDULER)
    except OrchestrationError as exc:
        logger.warning("schedule %s.%d: the tick at %s started no run: %s", workflow, index,
                       scheduled_at.isoformat(), exc)
        return ""
    logger.info("schedule %s.%d: tick %s %s run %s", workflow, index, scheduled_at.isoformat(),
                "started" if started else "had started", shown)
    return shown


async def apply(runtime: Any, definition: Definition) -> None:
    """Make the runtime's schedules of ``definition``'s workflow match its ``schedules`` (no-op on a runtime
    without schedules, when the definition has none)."""
    if not getattr(runtime, "schedules_supported", False):
        return
    if not definition.schedules and not getattr(runtime, "is_open", True):
        return  # nothing to add, and the runtime is not up yet: its reconciliation at the start removes old ones
    await runtime.set_schedules(definition.name, [s.model_dump(mode="json") for s in definition.schedules])


async def reconcile(runtime: Any, store: WorkflowStore) -> None:
    """At start: every saved workflow's schedules applied, and the schedules of workflows no longer saved with
    any removed."""
    if not getattr(runtime, "schedules_supported", False):
        return
    saved = {r.name: r for r in await store.list_workflows()}
    for name in await runtime.scheduled_workflows():
        if name not in saved or not saved[name].definition.get("schedules"):
            await runtime.set_schedules(name, [])
    for record in saved.values():
        if record.definition.get("schedules"):
            await apply(runtime, Definition.model_validate(record.definition))
