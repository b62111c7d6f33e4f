"""A run's status as the tools and resources show it: built from the runtime's run record, its recorded step
outcomes (:class:`~server.workflows.outcome.StepOutcome`) and the live tracker, over the run's plan (every
step it may run, sub-workflows' included, in plan order)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from server.workflows.interpreter import RunFailed, parse_arguments, step_name
from server.workflows.model import mermaid, topological_order
from server.workflows.outcome import ApprovalOpened, StepOutcome
from server.workflows.results import RunProgress, RunStatus, StepReport
from server.workflows.runtime import RunRecord
from server.workflows.tracker import RunTracker

FINISHED = ("completed", "failed", "cancelled")
MAX_NESTING = 8


class PlannedStep(NamedTuple):
    """A step a run may run: its record name, kind and (approvals) who may decide it."""

    name: str
    kind: str
    approvers: tuple[str, ...] = ()
    not_starter: bool = False


def plan_steps(arguments: Mapping[str, Any]) -> list[PlannedStep]:
    """Every step of a run, in plan order (sub-workflow steps after their parent's children, under
    ``parent.``). Linear in the run's size, which its start checked against the step ceiling."""
    definition, library = parse_arguments(arguments)

    def walk(current: Any, prefix: str, depth: int) -> list[PlannedStep]:
        out: list[PlannedStep] = []
        for step_id in topological_order(current):
            step = current.step(step_id)
            name = step_name(prefix, step_id)
            child = step.with_.get("workflow") if step.kind == "workflow" else None
            if isinstance(child, str) and child in library and depth < MAX_NESTING:
                out.extend(walk(library[child], f"{name}.", depth + 1))
            approvers = step.with_.get("approvers") if step.kind == "approval" else None
            out.append(PlannedStep(name, step.kind, tuple(a for a in approvers or () if isinstance(a, str)),
                                   step.kind == "approval" and step.with_.get("not_starter") is True))
        return out

    return walk(definition, "", 0)


def build_status(record: RunRecord, recorded: Mapping[str, Any], tracker: RunTracker, runtime: str,
                 *, plan: list[PlannedStep] | None = None, brief: bool = False,
                 run_id: str | None = None) -> RunStatus:
    """A :class:`RunStatus` from the runtime's record, its recorded step outcomes and the live tracker
    (``run_id``: the id to show, when the caller addresses the run by another than the runtime's)."""
    live = tracker.get(record.run_id)
    steps: list[StepReport] = []
    for planned in plan if plan is not None else plan_steps(record.arguments):
        name, kind = planned.name, planned.kind
        outcome = StepOutcome.from_record(recorded.get(name))
        opened = ApprovalOpened.from_record(recorded.get(f"{name}#opened")) if kind == "approval" else None
        state = live.steps.get(name) if live else None
        if outcome is not None:
            report = StepReport(id=name, kind=kind, status=outcome.status, attempts=outcome.attempts,
                                started_at=outcome.started_at, ended_at=outcome.ended_at, output=outcome.output,
                                error=outcome.error, error_class=outcome.error_class, reason=outcome.reason)
        elif opened is not None and (state is None or state.status == "pending"):
            # An approval opened (recorded) and not decided: waiting, whichever process runs it.
            report = StepReport(id=name, kind=kind, status="waiting", attempts=1, started_at=opened.opened_at)
        elif state is not None:
            report = StepReport(id=name, kind=kind, status=state.status, attempts=state.attempts,
                                started_at=state.started_at, ended_at=state.ended_at, output=state.output,
                                error=state.error, error_class=state.error_class, reason=state.reason)
        else:
            report = StepReport(id=name, kind=kind, status="pending")
        if record.status in FINISHED and report.status in ("pending", "running", "waiting"):
            report.status = "skipped" if record.status == "completed" else "not_run"
        if report.started_at is not None and report.ended_at is not None:
            report.duration_ms = round((report.ended_at - report.started_at) * 1000, 3)
        if brief:
            report.output = None
        steps.append(report)
    status = record.status
    if status == "running" and any(s.status == "waiting" for s in steps):
        status = "waiting"
    done = sum(s.status in ("completed", "failed", "skipped", "not_run") for s in steps)
    active = [s.id for s in steps if s.status in ("running", "waiting")]
    message = f"{done}/{len(steps)} steps done" + (f"; {', '.join(active[:5])} {status}" if active else "")
    outputs = record.output.get("outputs") if isinstance(record.output, dict) else None
    return RunStatus(run_id=run_id or record.run_id, workflow=record.workflow, status=status, outputs=outputs,
                     error=record.error, steps=[] if brief else steps,
                     progress=RunProgress(done=done, total=len(steps), message=message),
                     created_at=record.created_at, updated_at=record.updated_at, runtime=runtime)


def run_diagram(arguments: Mapping[str, Any]) -> str:
    """A run's DAG as a Mermaid flowchart (an empty one when its arguments no longer parse)."""
    try:
        definition, _ = parse_arguments(arguments)
    except RunFailed:
        return "flowchart TD"
    return mermaid(definition)


def definition_uri(name: str) -> str:
    return f"workflows://definitions/{name}"


def run_uri(run_id: str) -> str:
    return f"workflows://runs/{run_id}"
