"""The workflow service: save definitions, start runs, wait with progress, report status, cancel, decide
approvals. Tools and resources call this; it calls the runtime (in-memory or DBOS) and the store.

Bounded work per request: parsing, validation, input checks and plans run on a worker thread (at most
:data:`VALIDATION_THREADS` at once) under a deadline of :data:`VALIDATION_DEADLINE_S`; sub-workflows are
expanded with every saved workflow visited once and the step ceiling checked while expanding; each principal
has ceilings on unfinished runs and on the approval steps in them (``[limits]``). Waits (run end, cancellation,
a decision taking effect) wait on the runtime's and the tracker's events, each bounded.

Callers are :class:`server.security.Principal` s (default :data:`server.security.LOCAL`). A run belongs to the
principal that started it; another principal's run answers like an unknown id. A run id chosen by the caller
is the caller's own: it is kept as ``<run_id>:<owner tag>`` (the caller keeps using ``run_id``), so another
principal's run of the same id is neither found nor taken.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio

from server.models import DeferredModel
from server.security import LOCAL, Principal
from server.security.limits import CeilingExceeded, check_workflow_ceilings
from server.store import Store, WorkflowRecord
from server.workflows.access import keys_for, named, own_id, refusal, shown_id, visible
from server.workflows.inputs import check_inputs
from server.workflows.interpreter import APPROVALS_TOPIC, LAYOUT, RunFailed, approval_topic
from server.workflows.model import MAX_STEPS, Definition, InvalidWorkflow, WorkflowError, mermaid
from server.workflows.runtime import RunRecord, WorkflowRuntime
from server.workflows.status import (
    FINISHED,
    MAX_NESTING,
    PlannedStep,
    RunProgress,
    RunStatus,
    StepReport,
    build_status,
    plan_steps,
)
from server.workflows.tracker import RunTracker
from server.workflows.validation import parse_definition, validate

__all__ = ["ApprovalRefused", "RunConflict", "RunNotFound", "RunProgress", "RunStatus", "SavedWorkflow",
           "StepReport", "ToolStepsForbidden", "WorkflowNotFound", "WorkflowService", "definition_uri", "run_uri"]
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
VALIDATION_DEADLINE_S = 10.0
VALIDATION_THREADS = 2
WAIT_AFTER_ACTION_S = 5.0
"""How long cancel and approve/reject wait for the run to show the action's effect."""
_PLANS_KEPT = 256
Progress = Callable[[float, float, str], Awaitable[None]]
T = TypeVar("T")


class WorkflowNotFound(WorkflowError, ValueError):
    """No saved workflow of that name."""


class RunNotFound(WorkflowError, ValueError):
    """No run with that id (or another principal's)."""


class RunConflict(WorkflowError, ValueError):
    """The run id exists with other arguments, or the action does not fit the run's state."""


class ToolStepsForbidden(WorkflowError, PermissionError):
    """An inline definition with ``tool`` steps, started by a caller who may not run them."""


class ApprovalRefused(WorkflowError):
    """The caller may not decide this approval step (its ``approvers`` or ``not_starter`` say so)."""


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
        limits: ``[limits]`` (:class:`server.security.settings.LimitSettings`): the step-count and duration
            ceilings every run is checked against, and each principal's ceilings on unfinished runs and
            approval steps; ``None``: no ceilings.
    """

    def __init__(self, runtime: WorkflowRuntime, store: Store, tracker: RunTracker, *,
                 clock: Callable[[], float] = time.time, limits: Any = None) -> None:
        self.runtime = runtime
        self.store = store
        self.tracker = tracker
        self.limits = limits
        self._clock = clock
        self._plans: OrderedDict[str, list[PlannedStep]] = OrderedDict()
        self._validation: anyio.CapacityLimiter | None = None
        self._starting: anyio.Lock | None = None

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread under the validation deadline (CPU-heavy work stays off the loop)."""
        if self._validation is None:
            self._validation = anyio.CapacityLimiter(VALIDATION_THREADS)
        try:
            with anyio.fail_after(VALIDATION_DEADLINE_S):
                return await anyio.to_thread.run_sync(fn, *args, limiter=self._validation, abandon_on_cancel=True)
        except TimeoutError:
            raise InvalidWorkflow([f"checking the definition took over {VALIDATION_DEADLINE_S:g} s (the server is "
                                   "busy, or the definition is too complex): try again, or simplify it"]) from None

    # -- definitions ------------------------------------------------------------------------------------

    async def save(self, source: str | Mapping[str, Any]) -> SavedWorkflow:
        """Validate and save a definition (sub-workflows it names must be saved already).

        Raises:
            InvalidWorkflow: every problem found; nothing is saved.
            CeilingExceeded: more steps than ``[limits] workflow_max_steps`` (sub-workflows included).
        """
        definition = await self._off_loop(parse_definition, source)
        await self._library(definition)
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
        return await self._off_loop(validate, record.definition), record

    async def _library(self, definition: Definition) -> dict[str, Any]:
        """Every saved workflow ``definition`` uses as a sub-workflow, as JSON data. Each is read and validated
        once however often it is used; the run's size (its steps with every sub-workflow expanded) is added
        up while walking, and the step ceiling refuses the definition as soon as it is passed.

        Raises:
            InvalidWorkflow: a sub-workflow unknown, templated, cyclic or nested deeper than 8.
            CeilingExceeded: more steps than the ceiling.
        """
        ceiling = self.limits.workflow_max_steps if self.limits is not None else 100 * MAX_STEPS
        found: dict[str, Definition] = {}
        sized: dict[str, tuple[int, int]] = {}  # name -> (steps expanded, nesting below)
        problems: list[str] = []

        async def visit(current: Definition, chain: tuple[str, ...]) -> tuple[int, int]:
            total, height = len(current.steps), 0
            for step in current.steps:
                name = step.with_.get("workflow") if step.kind == "workflow" else None
                if step.kind != "workflow":
                    continue
                if not isinstance(name, str) or "{{" in name:
                    problems.append(f"step {step.id}: `workflow` is a saved workflow's name (no placeholders)")
                    continue
                if name in chain:
                    problems.append(f"step {step.id}: sub-workflow {name!r} would run itself (cycle)")
                    continue
                if name not in sized:
                    if name not in found:
                        record = await self.store.get_workflow(name)
                        if record is None:
                            problems.append(f"step {step.id}: no saved workflow {name!r} (save it first)")
                            continue
                        found[name] = await self._off_loop(validate, record.definition)
                    sized[name] = await visit(found[name], (*chain, name))
                steps, below = sized[name]
                if len(chain) + below >= MAX_NESTING:
                    problems.append(f"step {step.id}: sub-workflows nest deeper than {MAX_NESTING}")
                total, height = total + steps, max(height, below + 1)
                if total > ceiling:
                    raise CeilingExceeded(f"the workflow has at least {total} steps (sub-workflows included, counted "
                                          f"until the ceiling passed), over this server's ceiling of {ceiling}")
            return total, height

        total, _ = await visit(definition, (definition.name,))
        if problems:
            raise InvalidWorkflow(problems)
        if self.limits is not None:
            check_workflow_ceilings(self.limits, total)
        return {name: found[name].dump() for name in found}

    # -- runs -------------------------------------------------------------------------------------------

    async def start(self, workflow: str | Mapping[str, Any], inputs: Mapping[str, Any] | None,
                    run_id: str | None = None, *, caller: Principal | None = None) -> tuple[str, bool]:
        """Validate and start a run. Returns the run id (as the caller addresses it) and whether this call
        started it (``False``: the same id with the same arguments was started before; it is not run again).

        Inline definitions with a ``tool`` step anywhere (sub-workflows included) need role admin; saved
        workflows run whatever their steps.

        Raises:
            InvalidWorkflow / WorkflowNotFound: bad definition or inputs; nothing started.
            CeilingExceeded: the step ceiling, or the caller's ceilings on unfinished runs and approval steps;
                nothing started.
            ToolStepsForbidden: see above; nothing started.
            RunConflict: the caller's ``run_id`` exists with other arguments.
        """
        caller = caller or LOCAL
        if isinstance(workflow, str) and not workflow.lstrip().startswith(("{", "name:", "steps:")) \
                and "\n" not in workflow:
            definition, _ = await self.definition(workflow)
            inline = False
        else:
            definition = await self._off_loop(parse_definition, workflow)
            inline = True
        library = await self._library(definition)
        values = await self._off_loop(check_inputs, definition, inputs or {})
        arguments: dict[str, Any] = {"definition": definition.dump(), "library": library, "inputs": values}
        planned = await self._off_loop(plan_steps, arguments)
        if inline and caller.role != "admin" and any(p.kind == "tool" for p in planned):
            raise ToolStepsForbidden("run_workflow with tool steps needs role admin (inline definitions with "
                                     "`tool` steps); run a saved workflow instead")
        deadline_s = None if self.limits is None else check_workflow_ceilings(self.limits, len(planned))
        fingerprint = hashlib.sha256(json.dumps(arguments, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        shown = run_id or f"run-{uuid.uuid4().hex}"
        key = own_id(run_id, caller.owner_id) if run_id else shown
        if self._starting is None:
            self._starting = anyio.Lock()
        async with self._starting:  # the ceilings' count and the start, one at a time in this process
            existing = await self.runtime.get(key)
            if existing is not None:
                if existing.fingerprint != fingerprint or not visible(existing, caller.owner_filter):
                    raise RunConflict(f"run {shown} exists with a different workflow or inputs; use a new run_id")
                return shown, False
            await self._check_principal_ceilings(caller, planned)
            arguments.update(owner=caller.owner_id, layout=LAYOUT)
            if deadline_s is not None:
                arguments["deadline_at"] = self._clock() + deadline_s
            self._remember(fingerprint, planned)
            started = await self.runtime.start(key, definition.name, arguments, fingerprint)
        if not started:
            existing = await self.runtime.get(key)
            if existing is not None and existing.fingerprint != fingerprint:
                raise RunConflict(f"run {shown} exists with a different workflow or inputs; use a new run_id")
        return shown, started

    async def _check_principal_ceilings(self, caller: Principal, planned: list[PlannedStep]) -> None:
        """Refuse a run past the caller's ceilings on unfinished runs and on approval steps in them."""
        if self.limits is None:
            return
        active = [r for status in ("pending", "running") for r in await self._owned(status, caller.owner_id, 10**6)]
        most_runs = self.limits.workflow_max_active_runs
        if len(active) >= most_runs:
            raise CeilingExceeded(f"{len(active)} of your workflow runs are unfinished, this server's ceiling "
                                  f"per principal ([limits] workflow_max_active_runs = {most_runs}): wait for one to "
                                  "finish, or cancel one")
        approvals = sum(p.kind == "approval" for p in planned)
        if approvals:
            most = self.limits.workflow_max_waiting_approvals
            held = 0
            for record in active:
                held += sum(p.kind == "approval" for p in await self._plan_of(record))
            if held + approvals > most:
                raise CeilingExceeded(f"this run has {approvals} approval step(s) and your unfinished runs {held}, "
                                      f"over this server's ceiling of {most} per principal ([limits] "
                                      "workflow_max_waiting_approvals)")

    def _remember(self, fingerprint: str, planned: list[PlannedStep]) -> None:
        self._plans[fingerprint] = planned
        self._plans.move_to_end(fingerprint)
        while len(self._plans) > _PLANS_KEPT:
            self._plans.popitem(last=False)

    async def _plan_of(self, record: RunRecord) -> list[PlannedStep]:
        """The run's plan, computed once per distinct run (off the loop) and kept for later status reads."""
        planned = self._plans.get(record.fingerprint)
        if planned is None:
            try:
                planned = await self._off_loop(plan_steps, record.arguments)
            except (RunFailed, InvalidWorkflow):
                planned = []
            self._remember(record.fingerprint, planned)
        return planned

    async def _get(self, run_id: str, caller: Principal) -> RunRecord:
        for key in keys_for(run_id, caller.owner_id):
            record = await self.runtime.get(key)
            if record is not None and visible(record, caller.owner_filter):
                return record
        raise RunNotFound(f"no run {run_id!r}")

    async def _report(self, record: RunRecord, caller: Principal, *, brief: bool = False) -> RunStatus:
        recorded = {} if brief else await self.runtime.recorded(record.run_id)
        return build_status(record, recorded, self.tracker, self.runtime.name, plan=await self._plan_of(record),
                            brief=brief, run_id=shown_id(record, caller.owner_id))

    async def status(self, run_id: str, caller: Principal | None = None) -> RunStatus:
        """The run's status with every step (recorded outcomes from the runtime, live ones from the tracker).

        Raises:
            RunNotFound: no such run (or another principal's).
        """
        caller = caller or LOCAL
        return await self._report(await self._get(run_id, caller), caller)

    async def wait(self, run_id: str, wait_s: float, progress: Progress | None = None,
                   caller: Principal | None = None) -> RunStatus:
        """The run's status once it has finished, or when ``wait_s`` passes (then it is still running; the run
        goes on). Reports progress (steps done / total) on every step change. Cancelling the wait never
        cancels the run. Waits on the runtime's completion signal and the tracker's change events."""
        caller = caller or LOCAL
        record = await self._get(run_id, caller)
        if record.status not in FINISHED:
            with anyio.move_on_after(wait_s):
                async with anyio.create_task_group() as tg:
                    if progress is not None:
                        tg.start_soon(self._forward_progress, record.run_id, progress)
                    await self.runtime.finished(record.run_id)
                    tg.cancel_scope.cancel()
        status = await self._report(await self._get(run_id, caller), caller)
        if progress is not None and status.status in FINISHED:
            await progress(status.progress.done, status.progress.total, status.progress.message)
        return status

    async def _forward_progress(self, key: str, progress: Progress) -> None:
        last: tuple[int, int] | None = None
        while True:
            changed = self.tracker.changed(key)
            state = self.tracker.get(key)
            if state is not None:
                done, total = state.progress()
                if total and (done, total) != last:
                    last = (done, total)
                    await progress(done, total, f"{done}/{total} steps done")
                    continue  # steps may have moved on while the notification went out
            await changed.wait()

    async def list(self, status: str | None, limit: int, offset: int,
                   caller: Principal | None = None) -> list[RunStatus]:
        """Recent runs, newest first (``status`` filters: ``waiting`` means running runs with an approval open;
        another principal's runs are left out, except for admins)."""
        caller = caller or LOCAL
        wanted = "running" if status == "waiting" else status
        if caller.owner_filter is None:
            runs = await self.runtime.list(wanted, limit if status != "waiting" else 1000, offset)
        else:
            runs = (await self._owned(wanted, caller.owner_filter,
                                      offset + (limit if status != "waiting" else 1000)))[offset:]
        out = [await self._report(r, caller, brief=True) for r in runs]
        return [s for s in out if status is None or s.status == status][:limit]

    async def _owned(self, status: str | None, owner: str | None, wanted: int, page: int = 500,
                     scan_limit: int = 20_000) -> list[RunRecord]:
        """The newest ``wanted`` runs of ``owner`` (scanning at most ``scan_limit`` runs)."""
        found: list[RunRecord] = []
        for offset in range(0, scan_limit, page):
            runs = await self.runtime.list(status, page, offset)
            found.extend(r for r in runs if r.arguments.get("owner") == owner)
            if len(found) >= wanted or len(runs) < page:
                break
        return found[:wanted]

    async def cancel(self, run_id: str, caller: Principal | None = None) -> RunStatus:
        """Cancel a run (steps running now are interrupted; recorded ones stay recorded).

        Raises:
            RunNotFound / RunConflict: unknown (or another principal's) or already finished.
        """
        caller = caller or LOCAL
        record = await self._get(run_id, caller)
        if record.status in FINISHED:
            raise RunConflict(f"run {run_id} is already {record.status}")
        await self.runtime.cancel(record.run_id)
        with anyio.move_on_after(WAIT_AFTER_ACTION_S):
            await self.runtime.finished(record.run_id)
        return await self._report(await self._get(run_id, caller), caller)

    async def decide(self, run_id: str, decision: str, *, step: str | None = None, comment: str | None = None,
                     caller: Principal | None = None) -> RunStatus:
        """Approve or reject the run's waiting approval step (``step`` names it when several wait). The
        decision is recorded with the caller as the approver (``by``: the principal id, and its ``role``).

        Who may decide: the run's owner and admins, unless the step names ``approvers`` (role names, matched
        by that role or a higher one, or principal ids; those principals may then decide it even if they
        cannot otherwise see the run) or says ``not_starter: true`` (the principal that started the run may not).

        Raises:
            RunNotFound: unknown run (or another principal's that the caller may not decide).
            RunConflict: no (such) approval waiting.
            ApprovalRefused: the step's ``approvers`` or ``not_starter`` refuse the caller.
        """
        caller = caller or LOCAL
        record, planned = await self._decidable(run_id, caller)
        status = build_status(record, await self.runtime.recorded(record.run_id), self.tracker, self.runtime.name,
                              plan=planned)
        waiting = [s.id for s in status.steps if s.status == "waiting"]
        if step is not None and step not in waiting:
            raise RunConflict(f"step {step!r} of run {run_id} is not waiting for approval"
                              f"{'; waiting: ' + ', '.join(waiting) if waiting else ''}")
        if step is None:
            if len(waiting) != 1:
                raise RunConflict(f"run {run_id} has {'no step' if not waiting else 'several steps'} waiting for "
                                  f"approval{': pass step (' + ', '.join(waiting) + ')' if waiting else ''}")
            step = waiting[0]
        rules = next(p for p in planned if p.name == step)
        why_not = refusal(rules, caller, record)
        if why_not:
            raise ApprovalRefused(f"step {step} of run {run_id}: {why_not}")
        message = {"step": step, "decision": decision, "by": caller.id, "role": caller.role, "comment": comment,
                   "at": self._clock()}
        legacy = record.arguments.get("layout", 1) < LAYOUT
        await self.runtime.send(record.run_id, approval_topic(step) if legacy else APPROVALS_TOPIC, message)
        with anyio.move_on_after(WAIT_AFTER_ACTION_S):
            while True:  # until the decision shows here (a run executing on another replica: at once)
                changed = self.tracker.changed(record.run_id)
                state = self.tracker.get(record.run_id)
                current = state.steps.get(step) if state is not None else None
                if current is None or current.status != "waiting":
                    break
                await changed.wait()
        return await self._report(await self._runtime_record(record.run_id), caller)

    async def _decidable(self, run_id: str, caller: Principal) -> tuple[RunRecord, list[PlannedStep]]:
        """The run the caller may decide on: one it can see, or one whose approval steps name it."""
        try:
            record = await self._get(run_id, caller)
            return record, await self._plan_of(record)
        except RunNotFound:
            for key in keys_for(run_id, caller.owner_id):
                record = await self.runtime.get(key)
                if record is None:
                    continue
                planned = await self._plan_of(record)
                if any(p.kind == "approval" and named(p.approvers, caller) for p in planned):
                    return record, planned
            raise

    async def _runtime_record(self, key: str) -> RunRecord:
        record = await self.runtime.get(key)
        if record is None:
            raise RunNotFound(f"no run {key!r}")
        return record


def definition_uri(name: str) -> str:
    return f"workflows://definitions/{name}"


def run_uri(run_id: str) -> str:
    return f"workflows://runs/{run_id}"
