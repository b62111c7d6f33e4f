"""The DAG interpreter: runs one workflow run over a runtime :class:`~server.workflows.runtime.Execution`.

Order of work in a run (the durability contract rests on the first point):

1. **Plan**: every slot the run may need is taken from the execution at the start, in a fixed topological
   order (definition order among ready steps), sub-workflows' steps included at their parent's place. Branch
   timing never changes which record a step replays.
2. **Run**: every step is a task that waits for its dependencies, then (unless skipped) runs its attempt loop
   inside its slot, bounded by ``max_parallel``. The slot records the step's outcome — a JSON dict with
   ``status`` (completed / failed), ``output``, ``error``, ``error_class``, ``attempts``, ``started_at``,
   ``ended_at`` — so a recorded step never runs again, and failures are recorded like successes.
3. **Finish**: the ``outputs`` mapping is rendered over the steps; a step failing with ``on_error: fail``
   fails the run (:class:`RunFailed`), cancelling the steps still in flight.

``on_error``: ``fail`` fails the run; ``skip`` marks the step failed and skips everything downstream of it;
``continue`` lets downstream steps run (they see ``steps.X.status == "failed"`` and ``steps.X.error``).
A step is skipped when its ``when`` is false or a dependency was skipped. Live state (running, waiting,
attempt numbers) is kept in a :class:`RunTracker` for status and progress; recorded outcomes are the
runtime's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from server.workflows.model import (
    Definition,
    InvalidWorkflow,
    WorkflowError,
    check_inputs,
    topological_order,
    validate,
)
from server.pool.call import current_workflow
from server.security import LOCAL, Principal, run_principal
from server.workflows.evaluation import evaluate, render_value
from server.operations.telemetry import SPAN_WORKFLOW_RUN, SPAN_WORKFLOW_STEP, span
from server.workflows.runtime import Execution, MessageSlot, StepSlot
from server.workflows.steps import EXECUTORS, StepFailed, StepServices, error_class, run_tool

logger = logging.getLogger(__name__)
APPROVAL_DEFAULT_TIMEOUT_S = 86_400.0
_ERROR_CHARS = 1_000


class RunFailed(WorkflowError):
    """A run ended failed: a step failed with ``on_error: fail`` (named in the message)."""


@dataclass
class StepState:
    """Live state of one step in this process."""

    status: str = "pending"  # pending | running | waiting | completed | failed | skipped
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    error_class: str | None = None
    output: Any = None
    reason: str | None = None


@dataclass
class RunState:
    steps: dict[str, StepState] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)
    finished: bool = False
    """The interpreter is done with the run here (its result is being recorded, or is)."""

    def progress(self) -> tuple[int, int]:
        """(steps finished, steps known) by the live states."""
        done = sum(s.status in ("completed", "failed", "skipped") for s in self.steps.values())
        return done, len(self.steps)

    def touch(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class RunTracker:
    """Live step states of the runs executing in this process, with a change signal for progress."""

    def __init__(self) -> None:
        self._runs: dict[str, RunState] = {}

    def run(self, run_id: str) -> RunState:
        return self._runs.setdefault(run_id, RunState())

    def get(self, run_id: str) -> RunState | None:
        return self._runs.get(run_id)

    def update(self, run_id: str, step: str, **fields: Any) -> None:
        state = self.run(run_id)
        current = state.steps.setdefault(step, StepState())
        for key, value in fields.items():
            setattr(current, key, value)
        state.touch()

    def forget(self, run_id: str) -> None:
        state = self._runs.pop(run_id, None)
        if state is not None:
            state.touch()


@dataclass
class _Plan:
    definition: Definition
    prefix: str
    order: list[str]
    slots: dict[str, StepSlot] = field(default_factory=dict)
    extra: dict[str, StepSlot] = field(default_factory=dict)  # approval "opened" slots
    mailboxes: dict[str, MessageSlot] = field(default_factory=dict)
    children: dict[str, _Plan] = field(default_factory=dict)
    principal: Principal = LOCAL
    """Who the run's model calls are made for: its starter (the run record's owner), or a system principal."""


def step_name(prefix: str, step_id: str) -> str:
    """A step's record name: its DAG id, under its parent's (``review.analyze``) inside sub-workflows."""
    return f"{prefix}{step_id}"


def approval_topic(name: str) -> str:
    """The message topic an approval step listens on."""
    return f"approval:{name}"


class Interpreter:
    """Runs workflow runs. One per server; the runtime calls :meth:`execute` for each run.

    Args:
        services: what the step kinds call.
        tracker: live state for status and progress.
    """

    def __init__(self, services: StepServices, tracker: RunTracker | None = None) -> None:
        self.services = services
        self.tracker = tracker or RunTracker()

    async def execute(self, execution: Execution, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run a run to its end.

        Args:
            arguments: ``{"definition": <definition JSON>, "library": {name: <definition JSON>}, "inputs": {...}}``
                (the library holds every saved workflow the run uses as a sub-workflow, resolved at start).

        Returns:
            ``{"outputs": {...}}``: the definition's ``outputs`` mapping rendered over the steps.

        Raises:
            RunFailed: a step failed with ``on_error: fail``, or the outputs could not be rendered.
        """
        definition = validate(arguments["definition"])
        library = {name: validate(d) for name, d in (arguments.get("library") or {}).items()}
        run_id = execution.run_id
        self.tracker.run(run_id)
        # Calls made by this run's steps are recorded with the workflow's name (tasks started below inherit it).
        label = current_workflow.set(definition.name)
        try:
            with span(self.services.telemetry, SPAN_WORKFLOW_RUN,
                      {"ai_orchestration.workflow.name": definition.name, "ai_orchestration.workflow.run_id": run_id}):
                return await self._execute(definition, library, execution, arguments)
        finally:
            current_workflow.reset(label)
            # Everything a finished run shows is in the runtime's records from here: drop the live state.
            state = self.tracker.run(run_id)
            state.finished = True
            self.tracker.forget(run_id)

    async def _execute(self, definition: Definition, library: Mapping[str, Definition], execution: Execution,
                       arguments: Mapping[str, Any]) -> dict[str, Any]:
        failed: list[RunFailed] = []
        deadline_at = arguments.get("deadline_at")
        # The duration ceiling ([limits] workflow_max_duration_s), as a wall-clock deadline recorded at
        # start: a run recovered after a restart keeps the deadline it started with.
        with anyio.move_on_after(None if deadline_at is None
                                 else max(0.0, deadline_at - self.services.clock())) as ceiling:
            async with anyio.create_task_group() as receivers:
                plan = await self._plan(definition, library, execution, "", receivers,
                                        principal=await self._principal(execution.run_id, arguments))
                try:
                    context = await self._run_dag(plan, library, execution.run_id,
                                                  dict(arguments.get("inputs") or {}))
                except RunFailed as exc:
                    failed.append(exc)
                receivers.cancel_scope.cancel()
        if ceiling.cancelled_caught:
            raise RunFailed("the run went over this server's duration ceiling ([limits] "
                            "workflow_max_duration_s); steps still running were stopped")
        if failed:
            raise RunFailed(str(failed[0])) from None
        try:
            outputs = render_value(definition.outputs, context)
        except Exception as exc:  # noqa: BLE001 - a render failure fails the run with its message
            raise RunFailed(f"outputs could not be rendered: {exc}") from None
        return {"outputs": outputs}

    async def _principal(self, run_id: str, arguments: Mapping[str, Any]) -> Principal:
        """Who the run's steps act for: the starter named by its run record (runs started before run records kept
        the owner in their arguments)."""
        owner = arguments.get("owner")
        store = self.services.store
        if owner is None and store is not None:
            record = await store.runs.get_run(run_id)
            owner = record.owner if record is not None else None
        return run_principal(owner)

    async def _plan(self, definition: Definition, library: Mapping[str, Definition], execution: Execution,
                    prefix: str, receivers: TaskGroup, depth: int = 0, *, principal: Principal = LOCAL) -> _Plan:
        if depth > 8:
            raise RunFailed("sub-workflows nest deeper than 8")
        plan = _Plan(definition, prefix, topological_order(definition), principal=principal)
        for step_id in plan.order:
            step = definition.step(step_id)
            name = step_name(prefix, step_id)
            if step.kind == "approval":
                plan.extra[step_id] = execution.step_slot(f"{name}#opened")
                plan.mailboxes[step_id] = await execution.message_slot(approval_topic(name), receivers)
            if step.kind == "workflow":
                child = library.get(str(step.with_.get("workflow")))
                if child is None:
                    raise RunFailed(f"step {name}: sub-workflow {step.with_.get('workflow')!r} was not resolved")
                plan.children[step_id] = await self._plan(child, library, execution, f"{name}.", receivers,
                                                          depth + 1, principal=principal)
            plan.slots[step_id] = execution.step_slot(name)
        return plan

    async def _run_dag(self, plan: _Plan, library: Mapping[str, Definition], run_id: str,
                       inputs: dict[str, Any]) -> dict[str, Any]:
        definition = plan.definition
        context: dict[str, Any] = {"inputs": inputs, "steps": {}}
        done = {step_id: anyio.Event() for step_id in plan.order}
        outcomes: dict[str, dict[str, Any]] = {}
        limiter = anyio.CapacityLimiter(definition.max_parallel)
        failure: list[str] = []
        for step_id in plan.order:
            self.tracker.update(run_id, step_name(plan.prefix, step_id))

        async def run_one(step_id: str, tg: TaskGroup) -> None:
            step = definition.step(step_id)
            name = step_name(plan.prefix, step_id)
            for dep in step.depends_on:
                await done[dep].wait()
            skipped_by = [d for d in step.depends_on if outcomes[d]["status"] == "skipped"
                          or (outcomes[d]["status"] == "failed" and definition.step(d).on_error == "skip")]
            if skipped_by:
                outcome = await _record_skip(plan.slots[step_id], f"dependency {skipped_by[0]} was skipped or failed")
            elif step.when is not None and not evaluate(step.when, context):
                outcome = await _record_skip(plan.slots[step_id], "condition is false")
            elif step.kind in ("approval", "workflow"):
                # Waiting for a person, or for children under their own limit: no slot of max_parallel held.
                outcome = await self._run_step(plan, library, step_id, run_id, context)
            else:
                async with limiter:
                    outcome = await self._run_step(plan, library, step_id, run_id, context)
            outcomes[step_id] = outcome
            context["steps"][step_id] = {"status": outcome["status"], "output": outcome.get("output"),
                                         "error": outcome.get("error"), "error_class": outcome.get("error_class")}
            self.tracker.update(run_id, name, status=outcome["status"], attempts=outcome.get("attempts", 0),
                                started_at=outcome.get("started_at"), ended_at=outcome.get("ended_at"),
                                error=outcome.get("error"), error_class=outcome.get("error_class"),
                                output=outcome.get("output"), reason=outcome.get("reason"))
            if outcome["status"] == "failed" and step.on_error == "fail":
                failure.append(f"step {name} failed ({outcome.get('error_class')}): {outcome.get('error')}")
                tg.cancel_scope.cancel()
            done[step_id].set()

        async with anyio.create_task_group() as tg:
            for step_id in plan.order:
                tg.start_soon(run_one, step_id, tg)
        if failure:
            raise RunFailed(failure[0])
        return context

    async def _run_step(self, plan: _Plan, library: Mapping[str, Definition], step_id: str, run_id: str,
                        context: dict[str, Any]) -> dict[str, Any]:
        step = plan.definition.step(step_id)
        name = step_name(plan.prefix, step_id)
        clock = self.services.clock
        if step.kind == "workflow":
            return await self._run_child(plan, library, step_id, run_id, context)
        if step.kind == "approval":
            return await self._run_approval(plan, step_id, run_id, context)

        async def attempts() -> dict[str, Any]:
            started = clock()
            attempt = 0
            while True:
                attempt += 1
                self.tracker.update(run_id, name, status="running", attempts=attempt, started_at=started)
                try:
                    params = render_value(step.with_, context)
                    # A tool step bounds its tool call itself: opening the downstream session is not counted.
                    timed = step.timeout_s and step.kind != "tool"
                    scope = anyio.fail_after(step.timeout_s) if timed else nullcontext()
                    with scope, span(self.services.telemetry, SPAN_WORKFLOW_STEP,
                                     {"ai_orchestration.workflow.step": name, "ai_orchestration.workflow.kind": step.kind,
                                      "ai_orchestration.workflow.attempt": attempt}):
                        output = await self._execute_kind(step.kind, params, step.timeout_s, plan.principal)
                    return {"status": "completed", "output": output, "attempts": attempt, "started_at": started,
                            "ended_at": clock()}
                except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
                    cls = error_class(exc)
                    message = _message(exc, step.timeout_s)
                    if attempt < step.retry.max_attempts and step.retry.retries(cls):
                        delay = step.retry.backoff.delay_s(attempt)
                        logger.info("step %s attempt %d failed (%s); retrying in %.2f s", name, attempt, cls, delay)
                        self.tracker.update(run_id, name, error=message, error_class=cls)
                        await anyio.sleep(delay)
                        continue
                    return {"status": "failed", "output": None, "error": message, "error_class": cls,
                            "attempts": attempt, "started_at": started, "ended_at": clock()}

        return await plan.slots[step_id].run(attempts)

    async def _execute_kind(self, kind: str, params: dict[str, Any], timeout_s: float | None,
                            principal: Principal) -> Any:
        if kind == "tool":
            return await run_tool(self.services, params, timeout_s)
        return await EXECUTORS[kind](self.services, params, principal)

    async def _run_child(self, plan: _Plan, library: Mapping[str, Definition], step_id: str, run_id: str,
                         context: dict[str, Any]) -> dict[str, Any]:
        step = plan.definition.step(step_id)
        name = step_name(plan.prefix, step_id)
        child = plan.children[step_id]
        started = self.services.clock()
        self.tracker.update(run_id, name, status="running", attempts=1, started_at=started)
        try:
            params = render_value(step.with_, context)
            inputs = check_inputs(child.definition, params.get("inputs") or {})
            scope = anyio.fail_after(step.timeout_s) if step.timeout_s else nullcontext()
            with scope:
                child_context = await self._run_dag(child, library, run_id, inputs)
            output = render_value(child.definition.outputs, child_context)
        except (Exception, RunFailed) as exc:  # noqa: BLE001 - recorded as the step's failure
            cls = "subworkflow_failed" if isinstance(exc, RunFailed) else error_class(exc)
            if isinstance(exc, InvalidWorkflow):
                cls = "invalid_inputs"
            return {"status": "failed", "output": None, "error": _message(exc, step.timeout_s), "error_class": cls,
                    "attempts": 1, "started_at": started, "ended_at": self.services.clock()}
        return {"status": "completed", "output": output, "attempts": 1, "started_at": started,
                "ended_at": self.services.clock()}

    async def _run_approval(self, plan: _Plan, step_id: str, run_id: str, context: dict[str, Any]) -> dict[str, Any]:
        step = plan.definition.step(step_id)
        name = step_name(plan.prefix, step_id)
        clock = self.services.clock
        params = render_value(step.with_, context)
        timeout_s = float(params.get("timeout_s") or step.timeout_s or APPROVAL_DEFAULT_TIMEOUT_S)

        async def opened_now() -> dict[str, Any]:
            return {"opened_at": clock()}

        opened = (await plan.extra[step_id].run(opened_now))["opened_at"]
        mailbox = plan.mailboxes[step_id]

        async def decide() -> dict[str, Any]:
            self.tracker.update(run_id, name, status="waiting", attempts=1, started_at=opened,
                                output={"message": params.get("message")})
            message: Any = None
            with anyio.move_on_after(max(opened + timeout_s - clock(), 0)):
                message = await mailbox.receive()
            if not isinstance(message, dict):
                return {"status": "failed", "output": {"decision": "timeout"}, "attempts": 1,
                        "error": f"no decision within {_seconds(timeout_s)}", "error_class": "approval_timeout",
                        "started_at": opened, "ended_at": clock()}
            output = {"decision": message.get("decision"), "by": message.get("by"),
                      "comment": message.get("comment"), "decided_at": message.get("at")}
            if message.get("decision") != "approved":
                return {"status": "failed", "output": output, "error": "rejected" + (
                    f": {output['comment']}" if output["comment"] else ""), "error_class": "rejected",
                    "attempts": 1, "started_at": opened, "ended_at": clock()}
            return {"status": "completed", "output": output, "attempts": 1, "started_at": opened,
                    "ended_at": clock()}

        return await plan.slots[step_id].run(decide)


async def _record_skip(slot: StepSlot, reason: str) -> dict[str, Any]:
    """A skip, recorded like any outcome (so status after the run needs nothing but the records)."""

    async def skipped() -> dict[str, Any]:
        return {"status": "skipped", "output": None, "reason": reason, "attempts": 0}

    return await slot.run(skipped)


def _seconds(value: float) -> str:
    return f"{value:g} s" if math.isfinite(value) else "ever"


def _message(exc: BaseException, timeout_s: float | None) -> str:
    if isinstance(exc, TimeoutError) and not isinstance(exc, StepFailed):
        text = f"step timed out after {_seconds(timeout_s or 0)}" if timeout_s else "timed out"
    else:
        text = str(exc) or type(exc).__name__
    from server.security.redact import redact

    return redact(text)[:_ERROR_CHARS]


RunBody = Callable[[Execution, dict[str, Any]], Awaitable[dict[str, Any]]]
