"""The workflow service: save definitions, start runs, wait with progress, report status, cancel, decide
approvals. Tools and resources call this; it calls the runtime (in-memory or DBOS) and the store."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from pydantic import Field

from server.models import DeferredModel
from server.security.limits import check_workflow_ceilings
from server.store import RunStore, StorageError, WorkflowRecord, WorkflowRun, WorkflowStore
from server.workflows.interpreter import RunTracker, approval_topic, step_name
from server.workflows.model import (
    Definition,
    InvalidWorkflow,
    WorkflowError,
    check_inputs,
    mermaid,
    parse_definition,
    topological_order,
    validate,
)
from server.workflows.runtime import RunRecord, WorkflowRuntime

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
NOT_STARTED = ("recorded, not started yet: if this lasts, the server stopped before starting it; call run_workflow "
               "again with this run_id and the same workflow and inputs to start it")
FINISHED = ("completed", "failed", "cancelled")
MAX_NESTING = 8
Progress = Callable[[float, float, str], Awaitable[None]]


class WorkflowNotFound(WorkflowError):
    """No saved workflow of that name."""


class RunNotFound(WorkflowError):
    """No run with that id."""


class RunConflict(WorkflowError):
    """The run id exists with other arguments, or the action does not fit the run's state."""


class ToolStepsForbidden(WorkflowError):
    """An inline definition with ``tool`` steps, started by a caller who may not run them."""


class StepReport(DeferredModel):
    """One step of a run. Times: Unix seconds and milliseconds."""

    id: str = Field(description="the step's DAG id (parent.child inside sub-workflows)")
    kind: str
    status: str = Field(description="pending, running, waiting, completed, failed, skipped or not_run")
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    duration_ms: float | None = None
    output: Any = None
    error: str | None = None
    error_class: str | None = None
    reason: str | None = Field(default=None, description="why a step was skipped")


class RunProgress(DeferredModel):
    done: int = Field(description="steps finished (completed, failed or skipped)")
    total: int
    message: str = ""


class RunStatus(DeferredModel):
    """A run: status, outputs, every step, progress."""

    run_id: str
    workflow: str
    status: str = Field(description="pending, running, waiting (an approval), completed, failed or cancelled")
    outputs: dict[str, Any] | None = None
    error: str | None = None
    steps: list[StepReport]
    progress: RunProgress
    created_at: float | None = None
    updated_at: float | None = None
    runtime: str = ""


class SavedWorkflow(DeferredModel):
    name: str
    version: int
    changed: bool
    steps: int
    uri: str
    mermaid: str


class WorkflowService:
    """Everything the workflow tools and resources need.

    Args:
        runtime: runs the runs (:class:`server.workflows.runtime.MemoryRuntime` or the DBOS runtime).
        store: keeps saved definitions.
        tracker: the interpreter's live step states (shared with the interpreter).
        runs: the run records (:class:`server.store.WorkflowRun`): written before a run id is returned; the
            runtime's entry point keeps their status current (:mod:`server.workflows.run_records`).
        limits: ``[limits]`` (:class:`server.security.settings.LimitSettings`): the step-count and duration
            ceilings every run is checked against; ``None``: no ceilings.

    Ownership: a run belongs to the ``owner`` that started it, a field of its record (not of its arguments or
    its fingerprint). Lookups take ``owner_filter`` (:attr:`server.security.Principal.owner_filter`): another
    owner's run is "not found", like an unknown id; ``None`` sees every run. Listing is a query on the records.
    """

    def __init__(self, runtime: WorkflowRuntime, store: WorkflowStore, tracker: RunTracker, *, runs: RunStore,
                 clock: Callable[[], float] = time.time, limits: Any = None) -> None:
        self.runtime = runtime
        self.store = store
        self.runs = runs
        self.tracker = tracker
        self.limits = limits
        self._clock = clock

    # -- definitions ------------------------------------------------------------------------------------

    async def save(self, source: str | Mapping[str, Any]) -> SavedWorkflow:
        """Validate and save a definition (sub-workflows it names must be saved already).

        Raises:
            InvalidWorkflow: every problem found; nothing is saved.
            CeilingExceeded: more steps than ``[limits] workflow_max_steps`` (sub-workflows included).
        """
        definition = parse_definition(source)
        library = await self._library(definition, {definition.name})
        if self.limits is not None:
            check_workflow_ceilings(self.limits, len(plan_steps({"definition": definition.dump(), "library": library})))
        record, changed = await self.store.put_workflow(definition.name, definition.dump(), self._clock())
        return SavedWorkflow(name=record.name, version=record.version, changed=changed,
                             steps=len(definition.steps), uri=definition_uri(record.name), mermaid=mermaid(definition))

    async def definition(self, name: str) -> tuple[Definition, WorkflowRecord]:
        """A saved definition.

        Raises:
            WorkflowNotFound: none of that name.
        """
        record = await self.store.get_workflow(name)
        if record is None:
            names = [r.name for r in await self.store.list_workflows()]
            raise WorkflowNotFound(f"no saved workflow {name!r}; saved: {', '.join(names) or 'none'}")
        return validate(record.definition), record

    async def _library(self, definition: Definition, chain: set[str], depth: int = 0,
                       found: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every saved workflow ``definition`` uses as a sub-workflow, recursively, as JSON data."""
        found = {} if found is None else found
        problems = []
        for step in definition.steps:
            if step.kind != "workflow":
                continue
            name = step.with_.get("workflow")
            if not isinstance(name, str) or "{{" in name:
                problems.append(f"step {step.id}: `workflow` is a saved workflow's name (no placeholders)")
                continue
            if name in chain:
                problems.append(f"step {step.id}: sub-workflow {name!r} would run itself (cycle)")
                continue
            if depth >= MAX_NESTING:
                problems.append(f"step {step.id}: sub-workflows nest deeper than {MAX_NESTING}")
                continue
            record = await self.store.get_workflow(name)
            if record is None:
                problems.append(f"step {step.id}: no saved workflow {name!r} (save it first)")
                continue
            child = validate(record.definition)
            found[name] = child.dump()
            await self._library(child, chain | {name}, depth + 1, found)
        if problems:
            raise InvalidWorkflow(problems)
        return found

    # -- runs -------------------------------------------------------------------------------------------

    async def start(self, workflow: str | Mapping[str, Any], inputs: Mapping[str, Any] | None,
                    run_id: str | None = None, *, owner: str | None = None, owner_filter: str | None = None,
                    inline_tool_steps: bool = True) -> tuple[str, bool]:
        """Validate and start a run. Returns the run id and whether this call started it (``False``: the same
        id with the same arguments was started before; it is not run again).

        Args:
            owner: recorded as the run's owner (``None``: unauthenticated).
            owner_filter: the caller's filter; an existing ``run_id`` of another owner is refused.
            inline_tool_steps: ``False`` refuses an inline definition with a ``tool`` step anywhere (its
                sub-workflows included); saved workflows run whatever their steps.

        Raises:
            InvalidWorkflow / WorkflowNotFound: bad definition or inputs; nothing started.
            CeilingExceeded: more steps than ``[limits] workflow_max_steps``; nothing started.
            ToolStepsForbidden: see ``inline_tool_steps``; nothing started.
            RunConflict: ``run_id`` exists with other arguments (or another owner).
        """
        version = None
        if isinstance(workflow, str) and not workflow.lstrip().startswith(("{", "name:", "steps:")) \
                and "\n" not in workflow:
            definition, saved = await self.definition(workflow)
            inline, version = False, saved.version
        else:
            definition = parse_definition(workflow)
            inline = True
        library = await self._library(definition, {definition.name})
        values = check_inputs(definition, inputs or {})
        arguments: dict[str, Any] = {"definition": definition.dump(), "library": library, "inputs": values}
        planned = plan_steps(arguments)
        if inline and not inline_tool_steps and any(kind == "tool" for _, kind in planned):
            raise ToolStepsForbidden("run_workflow with tool steps needs role admin (inline definitions with "
                                     "`tool` steps); run a saved workflow instead")
        deadline_s = None if self.limits is None else check_workflow_ceilings(self.limits, len(planned))
        fingerprint = hashlib.sha256(json.dumps(arguments, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        run_id = run_id or f"run-{uuid.uuid4().hex}"
        conflict = f"run {run_id} exists with a different workflow or inputs; use a new run_id"
        now = self._clock()
        stored = await self.runs.get_run(run_id) or await self._adopt(run_id)
        created = False
        if stored is None:  # recorded (committed) before the id is returned to anyone
            stored, created = await self.runs.create_run(WorkflowRun(
                run_id=run_id, workflow=definition.name, fingerprint=fingerprint, created_at=now, owner=owner,
                workflow_version=version, steps=len(planned),
                deadline_at=None if deadline_s is None else now + deadline_s))
        if stored.fingerprint != fingerprint or not _visible(stored, owner_filter):
            raise RunConflict(conflict)
        if not created and await self.runtime.get(run_id) is not None:
            return run_id, False
        # New, or recorded by a start that the server did not live to finish: start it now.
        if stored.deadline_at is not None:
            arguments["deadline_at"] = stored.deadline_at
        started = await self.runtime.start(run_id, definition.name, arguments, fingerprint)
        return run_id, started

    async def _adopt(self, run_id: str) -> WorkflowRun | None:
        """The record of a run the runtime knows and the store does not (started before run records existed,
        its owner then kept in its arguments), written now; ``None`` when the runtime has no such run."""
        record = await self.runtime.get(run_id)
        if record is None:
            return None
        adopted = WorkflowRun(run_id=run_id, workflow=record.workflow, fingerprint=record.fingerprint,
                              created_at=record.created_at, updated_at=record.updated_at,
                              owner=record.arguments.get("owner"), steps=len(plan_steps(record.arguments)),
                              status=record.status if record.status in FINISHED else "running",  # type: ignore[arg-type]
                              deadline_at=record.arguments.get("deadline_at"), error=record.error)
        return (await self.runs.create_run(adopted))[0]

    async def _record(self, run_id: str, owner_filter: str | None) -> WorkflowRun:
        stored = await self.runs.get_run(run_id) or await self._adopt(run_id)
        if stored is None or not _visible(stored, owner_filter):
            raise RunNotFound(f"no run {run_id!r}")
        return stored

    async def _get(self, run_id: str, owner_filter: str | None) -> RunRecord:
        """The runtime's account of a run the caller may see (its record says so); a finished outcome the record
        lacks is written back to it."""
        stored = await self._record(run_id, owner_filter)
        record = await self.runtime.get(run_id)
        if record is None:
            return RunRecord(run_id, stored.workflow, {}, stored.fingerprint, "pending", None, NOT_STARTED,
                             stored.created_at, stored.updated_at)
        if record.status in FINISHED and record.status != stored.status:
            try:
                await self.runs.set_run_status(run_id, record.status, record.updated_at,  # type: ignore[arg-type]
                                               error=record.error, if_unfinished=False)
            except StorageError:
                pass  # written back on a later read; the runtime's answer stands
        return record

    async def wait(self, run_id: str, wait_s: float, progress: Progress | None = None,
                   owner_filter: str | None = None) -> RunStatus:
        """The run's status once it has finished, or when ``wait_s`` passes (then it is still running; the run
        goes on). Reports progress (steps done / total) on every step change. Cancelling the wait never
        cancels the run."""
        last: tuple[int, int] | None = None
        poll_s = 0.01
        with anyio.move_on_after(wait_s):
            while True:
                state = self.tracker.get(run_id)
                record = await self._get(run_id, owner_filter)
                if record.status in FINISHED:
                    status = await self.status(run_id, owner_filter)
                    if progress is not None:
                        await progress(status.progress.done, status.progress.total, status.progress.message)
                    return status
                if state is None or state.finished:
                    # Not (or no longer) executing here: its result is being recorded, or it runs elsewhere.
                    await anyio.sleep(poll_s)
                    poll_s = min(poll_s * 2, 0.5)
                    continue
                done, total = state.progress()
                if progress is not None and total and (done, total) != last:
                    last = (done, total)
                    await progress(done, total, f"{done}/{total} steps done")
                with anyio.move_on_after(0.01 if record.status == "pending" else 0.5):
                    await state.changed.wait()
                await anyio.sleep(0.02)  # at most ~50 status reads a second, however fast steps finish
        return await self.status(run_id, owner_filter)

    async def status(self, run_id: str, owner_filter: str | None = None) -> RunStatus:
        """The run's status with every step (recorded outcomes from the runtime, live ones from the tracker).

        Raises:
            RunNotFound: no such run (or another owner's).
        """
        record = await self._get(run_id, owner_filter)
        return build_status(record, await self.runtime.recorded(run_id), self.tracker, self.runtime.name)

    async def diagram(self, run_id: str, owner_filter: str | None = None) -> str:
        """The Mermaid ``flowchart`` of the definition the run was started with (:func:`mermaid`).

        Raises:
            RunNotFound: no such run (or another owner's).
        """
        record = await self._get(run_id, owner_filter)
        return mermaid(validate(record.arguments["definition"]))

    async def list(self, status: str | None, limit: int, offset: int,
                   owner_filter: str | None = None) -> list[RunStatus]:
        """Recent runs, newest first, from the run records (a query by owner and status, paged); ``waiting``
        means running runs with an approval open here; ``owner_filter`` leaves out other owners' runs."""
        if status == "waiting":
            runs = await self.runs.list_runs(owner=owner_filter, status=["running"], limit=1000)
            waiting = [s for s in map(self._brief, runs) if s.status == "waiting"]
            return waiting[offset:offset + limit]
        runs = await self.runs.list_runs(owner=owner_filter, status=[status] if status else (),  # type: ignore[list-item]
                                         limit=limit, offset=offset)
        return [s for s in map(self._brief, runs) if status is None or s.status == status]

    def _brief(self, run: WorkflowRun) -> RunStatus:
        """A listing's line for ``run``: its record, with live progress when it executes here."""
        live = self.tracker.get(run.run_id)
        status = run.status if run.finished or live is None else \
            "waiting" if any(s.status == "waiting" for s in live.steps.values()) else "running"
        done = run.steps if run.finished else live.progress()[0] if live is not None else 0
        return RunStatus(run_id=run.run_id, workflow=run.workflow, status=status, error=run.error, steps=[],
                         progress=RunProgress(done=done, total=run.steps, message=f"{done}/{run.steps} steps done"),
                         created_at=run.created_at, updated_at=run.updated_at, runtime=self.runtime.name)

    async def cancel(self, run_id: str, owner_filter: str | None = None) -> RunStatus:
        """Cancel a run (steps running now are interrupted; recorded ones stay recorded).

        Raises:
            RunNotFound / RunConflict: unknown (or another owner's) or already finished.
        """
        record = await self._get(run_id, owner_filter)
        if record.status in FINISHED:
            raise RunConflict(f"run {run_id} is already {record.status}")
        await self.runs.set_run_status(run_id, "cancelled", self._clock())  # before the run can end otherwise
        await self.runtime.cancel(run_id)
        with anyio.move_on_after(5):
            while (await self.status(run_id)).status not in FINISHED:
                await anyio.sleep(0.02)
        return await self.status(run_id)

    async def decide(self, run_id: str, decision: str, *, step: str | None = None, by: str | None = None,
                     comment: str | None = None, owner_filter: str | None = None) -> RunStatus:
        """Approve or reject the run's waiting approval step (``step`` names it when several wait).

        Raises:
            RunNotFound / RunConflict: unknown run (or another owner's), or no (such) approval waiting.
        """
        status = await self.status(run_id, owner_filter)
        waiting = [s.id for s in status.steps if s.status == "waiting"]
        if step is not None and step not in waiting:
            raise RunConflict(f"step {step!r} of run {run_id} is not waiting for approval"
                              f"{'; waiting: ' + ', '.join(waiting) if waiting else ''}")
        if step is None:
            if len(waiting) != 1:
                raise RunConflict(f"run {run_id} has {'no step' if not waiting else 'several steps'} waiting for "
                                  f"approval{': pass step (' + ', '.join(waiting) + ')' if waiting else ''}")
            step = waiting[0]
        message = {"decision": decision, "by": by, "comment": comment, "at": self._clock()}
        await self.runtime.send(run_id, approval_topic(step), message)
        with anyio.move_on_after(5):
            while True:
                state = self.tracker.get(run_id)
                current = next((s for s in (await self.status(run_id)).steps if s.id == step), None)
                if current is None or current.status != "waiting":
                    break
                if state is None:  # decided on another replica's run, or just recorded: poll
                    await anyio.sleep(0.05)
                    continue
                with anyio.move_on_after(0.5):
                    await state.changed.wait()
        return await self.status(run_id)


def _visible(record: WorkflowRun, owner_filter: str | None) -> bool:
    """Whether a caller with ``owner_filter`` may see ``record`` (``None``: every run)."""
    return owner_filter is None or record.owner == owner_filter


def definition_uri(name: str) -> str:
    return f"workflows://definitions/{name}"


def run_uri(run_id: str) -> str:
    return f"workflows://runs/{run_id}"


def plan_steps(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(record name, kind) of every step of a run, in plan order (sub-workflow steps after their parent's
    children, under ``parent.``)."""
    library = arguments.get("library") or {}
    if "definition" not in arguments:  # a run recorded but not started: nothing to plan from
        return []

    def walk(data: Mapping[str, Any], prefix: str, depth: int) -> list[tuple[str, str]]:
        definition = validate(data)
        out: list[tuple[str, str]] = []
        for step_id in topological_order(definition):
            step = definition.step(step_id)
            name = step_name(prefix, step_id)
            if step.kind == "workflow" and depth < MAX_NESTING and step.with_.get("workflow") in library:
                out.extend(walk(library[step.with_["workflow"]], f"{name}.", depth + 1))
            out.append((name, step.kind))
        return out

    return walk(arguments["definition"], "", 0)


def build_status(record: RunRecord, recorded: Mapping[str, Any], tracker: RunTracker, runtime: str,
                 *, brief: bool = False) -> RunStatus:
    """A :class:`RunStatus` from the runtime's record, its recorded step outcomes and the live tracker."""
    live = tracker.get(record.run_id)
    steps: list[StepReport] = []
    for name, kind in plan_steps(record.arguments):
        outcome = recorded.get(name)
        state = live.steps.get(name) if live else None
        if isinstance(outcome, dict) and "status" in outcome:
            report = StepReport(id=name, kind=kind, status=outcome["status"], attempts=outcome.get("attempts", 0),
                                started_at=outcome.get("started_at"), ended_at=outcome.get("ended_at"),
                                output=outcome.get("output"), error=outcome.get("error"),
                                error_class=outcome.get("error_class"), reason=outcome.get("reason"))
        elif isinstance(recorded.get(f"{name}#opened"), dict) and (state is None or state.status == "pending"):
            # An approval opened (recorded) and not decided: waiting, whichever process runs it.
            report = StepReport(id=name, kind=kind, status="waiting", attempts=1,
                                started_at=recorded[f"{name}#opened"].get("opened_at"))
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
    return RunStatus(run_id=record.run_id, workflow=record.workflow, status=status, outputs=outputs,
                     error=record.error, steps=[] if brief else steps,
                     progress=RunProgress(done=done, total=len(steps), message=message),
                     created_at=record.created_at, updated_at=record.updated_at, runtime=runtime)
