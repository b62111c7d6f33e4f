"""The workflow service: save definitions, start runs, wait with progress, report status, cancel, decide
approvals. Tools and resources call this; it calls the runtime (in-memory or DBOS) and the store.

Bounded work per request: parsing, validation, input checks and plans run on a worker thread (at most
:data:`VALIDATION_THREADS` at once) under a deadline of :data:`VALIDATION_DEADLINE_S`; sub-workflows are
expanded with every saved workflow visited once and the step ceiling checked while expanding; each principal
has ceilings on unfinished runs and on the approval steps in them (``[limits]``). Waits (run end, cancellation,
a decision taking effect) wait on the runtime's and the tracker's events, each bounded.

Callers are :class:`server.security.Principal` s (default :data:`server.security.LOCAL`). A run belongs to the
principal that started it: the ``owner`` of its run record (:class:`server.store.WorkflowRun`, written before
the run id is returned; not part of its arguments or fingerprint); another principal's run answers like an
unknown id. A run id chosen by the caller is the caller's own: its record and runtime run are kept under
``<run_id>:<owner tag>`` (the caller keeps using ``run_id``), so another principal's run of the same id is
neither found nor taken. Listings and the per-principal ceilings are queries on the run records.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio

from server.security import LOCAL, Principal
from server.security.limits import CeilingExceeded, check_workflow_ceilings
from server.store import RunStore, StorageError, WorkflowRecord, WorkflowRun, WorkflowStore
from server.workflows.access import keys_for, named, own_id, refusal, shown_id, visible
from server.workflows.inputs import check_inputs
from server.workflows.interpreter import APPROVALS_TOPIC, LAYOUT, RunFailed, approval_topic
from server.workflows.library import sub_workflows
from server.workflows.model import (ApprovalRefused, Definition, InvalidWorkflow, RunConflict, RunNotFound,
                                    ToolStepsForbidden, WorkflowNotFound, mermaid)
from server.workflows.oversight import Oversight
from server.workflows.results import SavedWorkflow
from server.workflows.runtime import RunRecord, WorkflowRuntime
from server.workflows.status import (
    FINISHED,
    PlannedStep,
    RunProgress,
    RunStatus,
    StepReport,
    build_status,
    definition_uri,
    plan_steps,
    run_diagram,
    run_uri,
)
from server.workflows.tracker import RunTracker
from server.workflows.validation import parse_definition, validate, warm

__all__ = ["ApprovalRefused", "RunConflict", "RunNotFound", "RunProgress", "RunStatus", "SavedWorkflow",
           "StepReport", "ToolStepsForbidden", "WorkflowNotFound", "WorkflowService", "definition_uri", "run_uri"]
VALIDATION_DEADLINE_S = 10.0
VALIDATION_THREADS = 2
WAIT_AFTER_ACTION_S = 5.0
"""How long cancel and approve/reject wait for the run to show the action's effect."""
_PLANS_KEPT = 256
NOT_STARTED = ("recorded, not started yet: if this lasts, the server stopped before starting it; call run_workflow "
               "again with this run_id and the same workflow and inputs to start it")
Progress = Callable[[float, float, str], Awaitable[None]]
_UNDECIDED = ("pending", "running", "waiting")  # the step has not taken the decision in yet
T = TypeVar("T")


class WorkflowService:
    """Everything the workflow tools and resources need.

    Args:
        runtime: runs the runs (:class:`server.workflows.runtime.MemoryRuntime` or the DBOS runtime).
        store: keeps saved definitions.
        tracker: the interpreter's live step states (shared with the interpreter).
        runs: the run records (:class:`server.store.WorkflowRun`): written before a run id is returned; the
            runtime's entry point keeps their status current (:mod:`server.workflows.run_records`).
        limits: ``[limits]`` (:class:`server.security.settings.LimitSettings`): the step-count and duration
            ceilings every run is checked against, and each principal's ceilings on unfinished runs and
            approval steps; ``None``: no ceilings.
        oversight: governance rules, schedules' checks and the audit trail (:mod:`server.workflows.oversight`).
    """

    def __init__(self, runtime: WorkflowRuntime, store: WorkflowStore, tracker: RunTracker, *, runs: RunStore,
                 clock: Callable[[], float] = time.time, limits: Any = None,
                 oversight: Oversight | None = None) -> None:
        self.oversight = oversight or Oversight()
        self.runtime, self.store, self.runs, self.tracker = runtime, store, runs, tracker
        self.limits, self._clock = limits, clock
        self._plans: OrderedDict[str, list[PlannedStep]] = OrderedDict()
        self._validation: anyio.CapacityLimiter | None = None
        self._warmed: anyio.Event | None = None
        self._starting: anyio.Lock | None = None

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread under the validation deadline (CPU-heavy work stays off the loop)."""
        if self._validation is None or self._warmed is None:  # the first check imports, off the deadline
            self._validation, self._warmed = anyio.CapacityLimiter(VALIDATION_THREADS), anyio.Event()
            try:
                await anyio.to_thread.run_sync(warm, limiter=self._validation)
            finally:
                self._warmed.set()
        await self._warmed.wait()
        try:
            with anyio.fail_after(VALIDATION_DEADLINE_S):
                return await anyio.to_thread.run_sync(fn, *args, limiter=self._validation, abandon_on_cancel=True)
        except TimeoutError:
            raise InvalidWorkflow([f"checking the definition took over {VALIDATION_DEADLINE_S:g} s (the server is "
                                   "busy, or the definition is too complex): try again, or simplify it"]) from None

    # -- definitions ------------------------------------------------------------------------------------

    async def save(self, source: str | Mapping[str, Any], *, caller: Principal | None = None) -> SavedWorkflow:
        """Validate, govern and save a definition (sub-workflows it names must be saved already); its schedules
        then replace the workflow's (:mod:`server.workflows.schedules`).

        Raises:
            InvalidWorkflow: every problem found (schedules in simple mode too); nothing is saved.
            PolicyViolation: governance rules refuse it (each violation listed); nothing is saved.
            CeilingExceeded: more steps than ``[limits] workflow_max_steps`` (sub-workflows included).
        """
        definition = await self._off_loop(parse_definition, source)
        await self._off_loop(self.oversight.before_save, definition, await self._library(definition), self.runtime)
        previous = await self.store.get_workflow(definition.name)
        record, changed = await self.store.put_workflow(definition.name, definition.dump(), self._clock())
        await self.oversight.after_save(record, definition, changed, self.runtime, caller or LOCAL, previous)
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
        """:func:`server.workflows.library.sub_workflows` of ``definition`` over the saved definitions."""
        return await sub_workflows(definition, self.store, self.limits, lambda data: self._off_loop(validate, data))

    # -- runs -------------------------------------------------------------------------------------------

    async def start(self, workflow: str | Mapping[str, Any], inputs: Mapping[str, Any] | None,
                    run_id: str | None = None, *, caller: Principal | None = None) -> tuple[str, bool]:
        """Validate, record and start a run. Returns the run id (as the caller addresses it) and whether this
        call started it (``False``: the same id with the same arguments was started before; it is not run again).

        Inline definitions with a ``tool`` step anywhere (sub-workflows included) need role admin, and the agents
        of a non-admin's inline run call no downstream tools (an ``agent`` or ``team`` step naming an agent with
        tools fails with ``tool_not_allowed``); saved workflows run whatever their steps.

        Raises:
            InvalidWorkflow / WorkflowNotFound: bad definition or inputs; nothing started.
            PolicyViolation: governance rules refuse the run; nothing started.
            CeilingExceeded: the step ceiling, or the caller's ceilings on unfinished runs and approval steps;
                nothing started.
            ToolStepsForbidden: see above; nothing started.
            RunConflict: the caller's ``run_id`` exists with other arguments.
            StorageError: the run record could not be written; nothing started.
        """
        caller = caller or LOCAL
        version = None
        if isinstance(workflow, str) and not workflow.lstrip().startswith(("{", "name:", "steps:")) \
                and "\n" not in workflow:
            definition, saved = await self.definition(workflow)
            inline, version = False, saved.version
        else:
            definition = await self._off_loop(parse_definition, workflow)
            inline = True
        library = await self._library(definition)
        values = await self._off_loop(check_inputs, definition, inputs or {})
        await self._off_loop(self.oversight.before_start, definition, library, values, caller)
        arguments: dict[str, Any] = {"definition": definition.dump(), "library": library, "inputs": values}
        planned = await self._off_loop(plan_steps, arguments)
        if inline and caller.role != "admin":  # nor may its agents call tools (known when their steps run)
            if any(p.kind == "tool" for p in planned):
                raise ToolStepsForbidden("run_workflow with tool steps needs role admin (inline definitions with "
                                         "`tool` steps); run a saved workflow instead")
            arguments["downstream_tools"] = False
        deadline_s = None if self.limits is None else check_workflow_ceilings(self.limits, len(planned))
        fingerprint = hashlib.sha256(json.dumps(arguments, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        shown = run_id or f"run-{uuid.uuid4().hex}"
        key = own_id(run_id, caller.owner_id) if run_id else shown
        if self._starting is None:
            self._starting = anyio.Lock()
        async with self._starting:  # the ceilings' count, the record and the start, one at a time in this process
            stored = await self.runs.get_run(key) or await self._adopt(key)
            created = False
            if stored is None:  # recorded (committed) before the id is returned to anyone
                await self._check_principal_ceilings(caller, planned)
                now = self._clock()
                stored, created = await self.runs.create_run(WorkflowRun(
                    run_id=key, workflow=definition.name, fingerprint=fingerprint, created_at=now,
                    owner=caller.owner_id, workflow_version=version, steps=len(planned),
                    deadline_at=None if deadline_s is None else now + deadline_s))
                if created:
                    await self.oversight.started(key, definition, version, values, caller)
            if stored.fingerprint != fingerprint or not visible(stored.owner, caller.owner_filter):
                raise RunConflict(f"run {shown} exists with a different workflow or inputs; use a new run_id")
            if not created and (stored.finished or await self.runtime.get(key) is not None):
                return shown, False
            # New, or recorded by a start that the server did not live to finish: start it now.
            arguments["layout"] = LAYOUT
            if stored.deadline_at is not None:
                arguments["deadline_at"] = stored.deadline_at
            self._remember(fingerprint, planned)
            started = await self.runtime.start(key, definition.name, arguments, fingerprint)
        return shown, started

    async def _check_principal_ceilings(self, caller: Principal, planned: list[PlannedStep]) -> None:
        """Refuse a run past the caller's ceilings on unfinished runs and on approval steps in them (a query on
        the run records; all unauthenticated callers count as one)."""
        if self.limits is None:
            return
        most_runs = self.limits.workflow_max_active_runs
        active = await self.runs.list_runs(owner=caller.owner_id, status=("pending", "running"), limit=most_runs)
        if len(active) >= most_runs:
            raise CeilingExceeded(f"{len(active)} of your workflow runs are unfinished, this server's ceiling "
                                  f"per principal ([limits] workflow_max_active_runs = {most_runs}): wait for one to "
                                  "finish, or cancel one")
        approvals = sum(p.kind == "approval" for p in planned)
        if approvals:
            most = self.limits.workflow_max_waiting_approvals
            held = 0
            for run in active:
                record = await self.runtime.get(run.run_id)
                if record is not None:
                    held += sum(p.kind == "approval" for p in await self._plan_of(record))
            if held + approvals > most:
                raise CeilingExceeded(f"this run has {approvals} approval step(s) and your unfinished runs {held}, "
                                      f"over this server's ceiling of {most} per principal ([limits] "
                                      "workflow_max_waiting_approvals)")

    async def _adopt(self, key: str) -> WorkflowRun | None:
        """The record of a run the runtime knows and the store does not (started before run records existed,
        its owner then kept in its arguments), written now; ``None`` when the runtime has no such run."""
        record = await self.runtime.get(key)
        if record is None:
            return None
        adopted = WorkflowRun(run_id=key, workflow=record.workflow, fingerprint=record.fingerprint,
                              created_at=record.created_at, updated_at=record.updated_at,
                              owner=record.arguments.get("owner"), steps=len(await self._plan_of(record)),
                              status=record.status if record.status in FINISHED else "running",  # type: ignore[arg-type]
                              deadline_at=record.arguments.get("deadline_at"), error=record.error)
        return (await self.runs.create_run(adopted))[0]

    def _remember(self, fingerprint: str, planned: list[PlannedStep]) -> None:
        self._plans[fingerprint] = planned
        self._plans.move_to_end(fingerprint)
        while len(self._plans) > _PLANS_KEPT:
            self._plans.popitem(last=False)

    async def _plan_of(self, record: RunRecord) -> list[PlannedStep]:
        """The run's plan, computed once per distinct run (off the loop) and kept for later status reads."""
        if "definition" not in record.arguments:  # recorded, not started: nothing to plan from yet
            return []
        planned = self._plans.get(record.fingerprint)
        if planned is None:
            try:
                planned = await self._off_loop(plan_steps, record.arguments)
            except (RunFailed, InvalidWorkflow):
                planned = []
            self._remember(record.fingerprint, planned)
        return planned

    async def _find(self, run_id: str, caller: Principal) -> WorkflowRun:
        """The record of the run ``run_id`` names for the caller (its own chosen id first)."""
        for key in keys_for(run_id, caller.owner_id):
            stored = await self.runs.get_run(key) or await self._adopt(key)
            if stored is not None and visible(stored.owner, caller.owner_filter):
                return stored
        raise RunNotFound(f"no run {run_id!r}")

    async def record_of(self, run_id: str, caller: Principal | None = None) -> WorkflowRun:
        """The run record ``run_id`` names for the caller (:class:`RunNotFound` as for a status)."""
        return await self._find(run_id, caller or LOCAL)

    async def _get(self, run_id: str, caller: Principal) -> tuple[WorkflowRun, RunRecord]:
        stored = await self._find(run_id, caller)
        return stored, await self._runtime_record(stored)

    async def _runtime_record(self, stored: WorkflowRun) -> RunRecord:
        """The runtime's account of a recorded run; a finished outcome the record lacks is written back to it."""
        record = await self.runtime.get(stored.run_id)
        if record is None:  # recorded and not started, or finished and forgotten by an in-memory runtime
            return RunRecord(stored.run_id, stored.workflow, {}, stored.fingerprint,
                             stored.status if stored.finished else "pending", None,
                             stored.error if stored.finished else NOT_STARTED, stored.created_at, stored.updated_at)
        if record.status in FINISHED and record.status != stored.status:
            try:
                await self.runs.set_run_status(stored.run_id, record.status, record.updated_at,  # type: ignore[arg-type]
                                               error=record.error, if_unfinished=False)
            except StorageError:
                pass  # written back on a later read; the runtime's answer stands
        return record

    async def _report(self, stored: WorkflowRun, record: RunRecord, caller: Principal) -> RunStatus:
        """The run's full status, built off the event loop (a run of a thousand steps takes a while). A run
        executing here is read from the tracker, which holds every step's outcome as it was recorded (or
        replayed); the runtime's step records are read only for runs executing elsewhere or finished."""
        live = self.tracker.get(record.run_id)
        executing = live is not None and not live.finished and record.status not in FINISHED
        recorded = {} if executing else await self.runtime.recorded(record.run_id)
        planned = await self._plan_of(record)
        return await self._off_loop(functools.partial(
            build_status, record, recorded, self.tracker, self.runtime.name, plan=planned,
            run_id=shown_id(stored.run_id, stored.owner, caller.owner_id)))

    async def status(self, run_id: str, caller: Principal | None = None) -> RunStatus:
        """The run's status with every step (recorded outcomes from the runtime, live ones from the tracker).

        Raises:
            RunNotFound: no such run (or another principal's).
        """
        caller = caller or LOCAL
        return await self._report(*await self._get(run_id, caller), caller)

    async def diagram(self, run_id: str, caller: Principal | None = None) -> str:
        """The Mermaid ``flowchart`` of the definition the run was started with (:func:`mermaid`; a run recorded
        and not started yet: an empty flowchart).

        Raises:
            RunNotFound: no such run (or another principal's).
        """
        _, record = await self._get(run_id, caller or LOCAL)
        return await self._off_loop(run_diagram, record.arguments)

    async def wait(self, run_id: str, wait_s: float, progress: Progress | None = None,
                   caller: Principal | None = None) -> RunStatus:
        """The run's status once it has finished, or when ``wait_s`` passes (then it is still running; the run
        goes on). Reports progress (steps done / total) on every step change. Cancelling the wait never
        cancels the run. Waits on the runtime's completion signal and the tracker's change events."""
        caller = caller or LOCAL
        stored, record = await self._get(run_id, caller)
        if record.status not in FINISHED:
            with anyio.move_on_after(wait_s):
                async with anyio.create_task_group() as tg:
                    if progress is not None:
                        tg.start_soon(self._forward_progress, record.run_id, progress)
                    await self.runtime.finished(record.run_id)
                    tg.cancel_scope.cancel()
        status = await self._report(stored, await self._runtime_record(stored), caller)
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
        """Recent runs, newest first, from the run records (a query by owner and status, paged); ``waiting``
        means running runs with an approval open here; another principal's runs are left out, but for admins."""
        caller = caller or LOCAL
        if status == "waiting":
            runs = await self.runs.list_runs(owner=caller.owner_filter, status=["running"], limit=1000)
            waiting = [s for s in (self._brief(r, caller) for r in runs) if s.status == "waiting"]
            return waiting[offset:offset + limit]
        runs = await self.runs.list_runs(owner=caller.owner_filter, status=[status] if status else (),  # type: ignore[list-item]
                                         limit=limit, offset=offset)
        return [s for s in (self._brief(r, caller) for r in runs) if status is None or s.status == status]

    def _brief(self, run: WorkflowRun, caller: Principal) -> RunStatus:
        """A listing's line for ``run``: its record, with live progress when it executes here."""
        live = self.tracker.get(run.run_id)
        status = run.status if run.finished or live is None else \
            "waiting" if any(s.status == "waiting" for s in live.steps.values()) else "running"
        done = run.steps if run.finished else live.progress()[0] if live is not None else 0
        return RunStatus(run_id=shown_id(run.run_id, run.owner, caller.owner_id), workflow=run.workflow,
                         status=status, error=run.error, steps=[],
                         progress=RunProgress(done=done, total=run.steps, message=f"{done}/{run.steps} steps done"),
                         created_at=run.created_at, updated_at=run.updated_at, runtime=self.runtime.name)

    async def cancel(self, run_id: str, caller: Principal | None = None) -> RunStatus:
        """Cancel a run (steps running now are interrupted; recorded ones stay recorded).

        Raises:
            RunNotFound / RunConflict: unknown (or another principal's) or already finished.
        """
        caller = caller or LOCAL
        stored, record = await self._get(run_id, caller)
        if record.status in FINISHED:
            raise RunConflict(f"run {run_id} is already {record.status}")
        await self.runs.set_run_status(stored.run_id, "cancelled", self._clock())  # before the run can end otherwise
        await self.runtime.cancel(stored.run_id)
        with anyio.move_on_after(WAIT_AFTER_ACTION_S):
            await self.runtime.finished(stored.run_id)
        return await self._report(stored, await self._runtime_record(stored), caller)

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
        stored, record, planned = await self._decidable(run_id, caller)
        recorded = await self.runtime.recorded(record.run_id)
        status = await self._off_loop(functools.partial(build_status, record, recorded, self.tracker,
                                                        self.runtime.name, plan=planned))
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
        why_not = refusal(rules, caller, stored.owner)
        if why_not:
            raise ApprovalRefused(f"step {step} of run {run_id}: {why_not}")
        message = {"step": step, "decision": decision, "by": caller.id, "role": caller.role, "comment": comment,
                   "at": self._clock()}
        legacy = record.arguments.get("layout", 1) < LAYOUT
        await self.runtime.send(record.run_id, approval_topic(step) if legacy else APPROVALS_TOPIC, message)
        await self.oversight.decided(record.run_id, step, decision, comment, caller)
        return await self._decision_shown(stored, record.run_id, step, caller)

    async def approvals_for(self, run_id: str, caller: Principal) -> tuple[str, list[str]]:
        """The run's key (what :attr:`tracker` knows it by) and its waiting approval steps that ``caller`` may
        decide (:meth:`decide` would not refuse them).

        Raises:
            RunNotFound: unknown run (or another principal's that the caller may not decide).
        """
        stored, record, planned = await self._decidable(run_id, caller)
        rules = {p.name: p for p in planned}
        steps = (await self._report(stored, record, caller)).steps
        return stored.run_id, [s.id for s in steps if s.status == "waiting" and s.id in rules
                               and refusal(rules[s.id], caller, stored.owner) is None]

    async def _decision_shown(self, stored: WorkflowRun, key: str, step: str, caller: Principal) -> RunStatus:
        """The run's report once ``step`` shows its decision taken in (or after :data:`WAIT_AFTER_ACTION_S`):
        woken by the tracker's events for a run executing here; on another replica, read again (DBOS notifies
        nobody of another executor's step records: 20 ms to 0.5 s)."""
        pause = 0.02
        with anyio.move_on_after(WAIT_AFTER_ACTION_S):
            while True:
                changed = self.tracker.changed(key)  # before the read, so that no change slips between
                report = await self._report(stored, await self._runtime_record(stored), caller)
                if next((s.status for s in report.steps if s.id == step), None) not in _UNDECIDED:
                    return report
                with anyio.move_on_after(pause if self.tracker.get(key) is None else 0.25):
                    await changed.wait()
                pause = min(pause * 2, 0.5)
        return await self._report(stored, await self._runtime_record(stored), caller)

    async def _decidable(self, run_id: str, caller: Principal) -> tuple[WorkflowRun, RunRecord, list[PlannedStep]]:
        """The run the caller may decide on: one it can see, or one whose approval steps name it."""
        try:
            stored, record = await self._get(run_id, caller)
            return stored, record, await self._plan_of(record)
        except RunNotFound:
            for key in keys_for(run_id, caller.owner_id):
                stored = await self.runs.get_run(key) or await self._adopt(key)
                if stored is None:
                    continue
                record = await self._runtime_record(stored)
                planned = await self._plan_of(record)
                if any(p.kind == "approval" and named(p.approvers, caller) for p in planned):
                    return stored, record, planned
            raise
