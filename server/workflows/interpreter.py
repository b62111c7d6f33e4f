"""The DAG interpreter: runs one workflow run over a runtime :class:`~server.workflows.runtime.Execution`.

Order of work in a run (the durability contract rests on the first point):

1. **Plan**: every slot the run may need is taken from the execution at the start, in a fixed topological
   order (definition order among ready steps), sub-workflows' steps included at their parent's place, then one
   mailbox for the run's approval decisions. Branch timing never changes which record a step replays.
2. **Run**: every step is a task that waits for its dependencies, then (unless skipped) runs its attempt loop
   inside its slot, bounded by ``max_parallel``. The slot records the step's
   :class:`~server.workflows.outcome.StepOutcome` (as JSON), so a recorded step never runs again, and
   failures are recorded like successes.
3. **Finish**: the ``outputs`` mapping is rendered over the steps; a step failing with ``on_error: fail``
   fails the run (:class:`RunFailed`), cancelling the steps still in flight.

``on_error``: ``fail`` fails the run; ``skip`` marks the step failed and skips everything downstream of it;
``continue`` lets downstream steps run (they see ``steps.X.status == "failed"`` and ``steps.X.error``).
A step is skipped when its ``when`` is false or a dependency was skipped. Live state (running, waiting,
attempt numbers) is kept in a :class:`~server.workflows.tracker.RunTracker` for status and progress;
recorded outcomes are the runtime's.

Approval decisions arrive as messages on one topic per run (:data:`APPROVALS_TOPIC`, layout 2), each naming
its step; one receiver hands them to the waiting steps. Runs started before layout 2 (no ``layout`` in their
arguments) kept one topic per approval step, received at the step's place in the plan: they replay that way.
A step's ordinary failure is logged once, at WARNING, with the run id and the error class.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from pydantic import ValidationError

from server.operations.audit import current_step
from server.operations.telemetry import SPAN_WORKFLOW_RUN, SPAN_WORKFLOW_STEP, span
from server.pool.call import current_workflow
from server.security import LOCAL, Principal, run_principal
from server.workflows.evaluation import evaluate, render_value
from server.workflows.inputs import check_inputs
from server.workflows.model import Definition, InvalidWorkflow, WorkflowError, topological_order
from server.workflows.outcome import ApprovalOpened, StepOutcome
from server.workflows.runtime import Execution, MessageSlot, StepSlot
from server.workflows.steps import AGENT_KINDS, EXECUTORS, StepFailed, StepServices, error_class, run_tool
from server.workflows.tracker import RunTracker

if TYPE_CHECKING:
    from server.workflows.oversight import RunAudit

logger = logging.getLogger(__name__)
APPROVAL_DEFAULT_TIMEOUT_S = 86_400.0
APPROVALS_TOPIC = "approvals"
"""The topic a run's approval decisions are sent on (layout 2): ``{"step": <record name>, "decision", "by",
"role", "comment", "at"}``."""
LAYOUT = 2
"""Recorded in a run's arguments as ``layout``: 2 = one approvals topic per run; absent = one per step."""
_ERROR_CHARS = 1_000


class RunFailed(WorkflowError):
    """A run ended failed: a step failed with ``on_error: fail`` (named in the message)."""


@dataclass
class _Plan:
    definition: Definition
    prefix: str
    order: list[str]
    slots: dict[str, StepSlot] = field(default_factory=dict)
    extra: dict[str, StepSlot] = field(default_factory=dict)  # approval "opened" slots
    children: dict[str, _Plan] = field(default_factory=dict)
    principal: Principal = LOCAL
    """Who the run's model calls are made for: its starter (the run record's owner), or a system principal."""
    downstream_tools: bool = True
    """Whether agents may call downstream MCP tools: not in a run of an inline definition that a non-admin
    started (:meth:`server.workflows.service.WorkflowService.start` records ``downstream_tools: false``)."""


class _Decisions:
    """Approval decisions of one run, by step record name: the first message for a step wins."""

    def __init__(self) -> None:
        self._messages: dict[str, dict[str, Any]] = {}
        self._arrived: dict[str, anyio.Event] = {}

    def deliver(self, name: str, message: Any) -> None:
        if isinstance(message, dict) and name not in self._messages:
            self._messages[name] = message
            self._arrived.setdefault(name, anyio.Event()).set()

    async def wait(self, name: str) -> dict[str, Any]:
        await self._arrived.setdefault(name, anyio.Event()).wait()
        return self._messages[name]

    async def pump(self, mailbox: MessageSlot, name: str | None = None) -> None:
        """Hand each message to its step (``name``: a layout-1 mailbox, for one step only)."""
        while True:
            message = await mailbox.receive()
            step = name if name is not None else (message.get("step") if isinstance(message, dict) else None)
            if isinstance(step, str):
                self.deliver(step, message)
            if name is not None:
                return


def step_name(prefix: str, step_id: str) -> str:
    """A step's record name: its DAG id, under its parent's (``review.analyze``) inside sub-workflows."""
    return f"{prefix}{step_id}"


def approval_topic(name: str) -> str:
    """The message topic a layout-1 approval step listens on."""
    return f"approval:{name}"


def parse_arguments(arguments: Mapping[str, Any]) -> tuple[Definition, dict[str, Definition]]:
    """The run's definition and sub-workflows, parsed (their shape; the meaning was validated at start).

    Raises:
        RunFailed: a definition no longer parses.
    """
    try:
        return (Definition.model_validate(arguments["definition"]),
                {name: Definition.model_validate(d) for name, d in (arguments.get("library") or {}).items()})
    except (KeyError, ValidationError) as exc:
        raise RunFailed(f"the run's definition does not parse: {str(exc)[:300]}") from None


class Interpreter:
    """Runs workflow runs. One per server; the runtime calls :meth:`execute` for each run.

    Args:
        services: what the step kinds call.
        tracker: live state for status and progress.
    """

    def __init__(self, services: StepServices, tracker: RunTracker | None = None, audit: RunAudit | None = None
                 ) -> None:
        self.services = services
        self.tracker = tracker or RunTracker()
        self.audit = audit

    async def execute(self, execution: Execution, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run a run to its end.

        Args:
            arguments: ``{"definition": <definition JSON>, "library": {name: <definition JSON>}, "inputs": {...},
                "layout": 2, "deadline_at": <Unix s>}`` (the library holds every saved workflow the run uses as
                a sub-workflow, resolved at start).

        Returns:
            ``{"outputs": {...}}``: the definition's ``outputs`` mapping rendered over the steps.

        Raises:
            RunFailed: a step failed with ``on_error: fail``, or the outputs could not be rendered.
        """
        definition, library = await anyio.to_thread.run_sync(parse_arguments, arguments)  # CPU: off the loop
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
            self.tracker.forget(run_id)

    async def _execute(self, definition: Definition, library: Mapping[str, Definition], execution: Execution,
                       arguments: Mapping[str, Any]) -> dict[str, Any]:
        failed: list[RunFailed] = []
        deadline_at = arguments.get("deadline_at")
        legacy = arguments.get("layout", 1) < LAYOUT
        decisions = _Decisions()
        # The duration ceiling ([limits] workflow_max_duration_s), as a wall-clock deadline recorded at
        # start: a run recovered after a restart keeps the deadline it started with.
        with anyio.move_on_after(None if deadline_at is None
                                 else max(0.0, deadline_at - self.services.clock())) as ceiling:
            async with anyio.create_task_group() as receivers:
                plan = await self._plan(definition, library, execution, "", receivers, decisions, legacy,
                                        principal=await self._principal(execution.run_id, arguments),
                                        downstream_tools=arguments.get("downstream_tools", True) is not False)
                if not legacy and _has_approvals(plan):
                    mailbox = await execution.message_slot(APPROVALS_TOPIC, receivers)
                    receivers.start_soon(decisions.pump, mailbox)
                try:
                    context = await self._run_dag(plan, library, execution.run_id,
                                                  dict(arguments.get("inputs") or {}), decisions)
                except RunFailed as exc:
                    failed.append(exc)
                receivers.cancel_scope.cancel()
        if ceiling.cancelled_caught:
            logger.warning("workflow run %s went over the duration ceiling; its running steps were stopped",
                           execution.run_id)
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
                    prefix: str, receivers: TaskGroup, decisions: _Decisions, legacy: bool, depth: int = 0, *,
                    principal: Principal = LOCAL, downstream_tools: bool = True) -> _Plan:
        if depth > 8:
            raise RunFailed("sub-workflows nest deeper than 8")
        try:
            plan = _Plan(definition, prefix, topological_order(definition), principal=principal,
                         downstream_tools=downstream_tools)
        except InvalidWorkflow as exc:
            raise RunFailed(str(exc)) from None
        for step_id in plan.order:
            step = definition.step(step_id)
            name = step_name(prefix, step_id)
            if step.kind == "approval":
                plan.extra[step_id] = execution.step_slot(f"{name}#opened")
                if legacy:  # layout 1: this step's own topic, received at its place in the plan
                    mailbox = await execution.message_slot(approval_topic(name), receivers, repeat=False)
                    receivers.start_soon(decisions.pump, mailbox, name)
            if step.kind == "workflow":
                child = library.get(str(step.with_.get("workflow")))
                if child is None:
                    raise RunFailed(f"step {name}: sub-workflow {step.with_.get('workflow')!r} was not resolved")
                plan.children[step_id] = await self._plan(child, library, execution, f"{name}.", receivers,
                                                          decisions, legacy, depth + 1, principal=principal,
                                                          downstream_tools=downstream_tools)
            plan.slots[step_id] = execution.step_slot(name)
        return plan

    async def _run_dag(self, plan: _Plan, library: Mapping[str, Definition], run_id: str,
                       inputs: dict[str, Any], decisions: _Decisions) -> dict[str, Any]:
        definition = plan.definition
        context: dict[str, Any] = {"inputs": inputs, "steps": {}}
        done = {step_id: anyio.Event() for step_id in plan.order}
        outcomes: dict[str, StepOutcome] = {}
        limiter = anyio.CapacityLimiter(definition.max_parallel)
        failure: list[str] = []
        for step_id in plan.order:
            self.tracker.update(run_id, step_name(plan.prefix, step_id))

        async def run_one(step_id: str, tg: TaskGroup) -> None:
            step = definition.step(step_id)
            name = step_name(plan.prefix, step_id)
            for dep in step.depends_on:
                await done[dep].wait()
            skipped_by = [d for d in step.depends_on if outcomes[d].status == "skipped"
                          or (outcomes[d].status == "failed" and definition.step(d).on_error == "skip")]
            # Every record is written under max_parallel, so a wide run's records arrive at its pace rather than
            # in one burst of ready tasks that would keep the event loop from everyone else.
            if skipped_by:
                async with limiter:
                    outcome = await _record(plan.slots[step_id], StepOutcome.skipped(
                        f"dependency {skipped_by[0]} was skipped or failed"))
            elif step.when is not None and not evaluate(step.when, context):
                async with limiter:
                    outcome = await _record(plan.slots[step_id], StepOutcome.skipped("condition is false"))
            elif step.kind == "workflow":  # children run under their own limit: no slot of max_parallel held
                outcome = await self._run_child(plan, library, step_id, run_id, context, decisions)
            elif step.kind == "approval":  # waiting for a person holds no slot either: only its opening does
                outcome = await self._run_approval(plan, step_id, run_id, context, decisions, limiter)
            else:
                async with limiter:
                    outcome = await self._run_step(plan, step_id, run_id, context)
            outcomes[step_id] = outcome
            context["steps"][step_id] = outcome.view()
            self.tracker.settle(run_id, name, outcome)
            if self.audit is not None:
                await self.audit.step(run_id, name, step.kind, outcome, self.tracker.seen(run_id, name),
                                      plan.principal.id, [step_name(plan.prefix, d) for d in step.depends_on])
            if outcome.status == "failed" and step.on_error == "fail":
                failure.append(f"step {name} failed ({outcome.error_class}): {outcome.error}")
                tg.cancel_scope.cancel()
            done[step_id].set()

        async with anyio.create_task_group() as tg:
            for step_id in plan.order:
                tg.start_soon(run_one, step_id, tg)
        if failure:
            raise RunFailed(failure[0])
        return context

    async def _run_step(self, plan: _Plan, step_id: str, run_id: str, context: dict[str, Any]) -> StepOutcome:
        step = plan.definition.step(step_id)
        name = step_name(plan.prefix, step_id)
        clock = self.services.clock

        async def attempts() -> StepOutcome:
            started = clock()
            attempt = 0
            while True:
                attempt += 1
                self.tracker.update(run_id, name, status="running", attempts=attempt, started_at=started)
                try:
                    params = render_value(step.with_, context)
                    self.tracker.update(run_id, name, seen=params)
                    # A tool step bounds its tool call itself: opening the downstream session is not counted.
                    timed = step.timeout_s and step.kind != "tool"
                    scope = anyio.fail_after(step.timeout_s) if timed else nullcontext()
                    step_token = current_step.set((run_id, name))  # the policy's decisions name the step
                    try:
                        with scope, span(self.services.telemetry, SPAN_WORKFLOW_STEP,
                                         {"ai_orchestration.workflow.step": name,
                                          "ai_orchestration.workflow.kind": step.kind,
                                          "ai_orchestration.workflow.attempt": attempt}):
                            output = await self._execute_kind(step.kind, params, step.timeout_s, plan)
                    finally:
                        current_step.reset(step_token)
                    return StepOutcome.completed(output, attempts=attempt, started_at=started, ended_at=clock())
                except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
                    cls = error_class(exc)
                    message = _message(exc, step.timeout_s)
                    if attempt < step.retry.max_attempts and step.retry.retries(cls):
                        delay = step.retry.backoff.delay_s(attempt)
                        logger.info("workflow run %s: step %s attempt %d failed (%s); retrying in %.2f s", run_id,
                                    name, attempt, cls, delay)
                        self.tracker.update(run_id, name, error=message, error_class=cls)
                        await anyio.sleep(delay)
                        continue
                    _log_failure(run_id, name, cls, attempt)
                    return StepOutcome.failed(message, cls, attempts=attempt, started_at=started, ended_at=clock())

        return await _record(plan.slots[step_id], attempts)

    async def _execute_kind(self, kind: str, params: dict[str, Any], timeout_s: float | None, plan: _Plan) -> Any:
        if kind == "tool":
            return await run_tool(self.services, params, timeout_s)
        services = self.services
        if kind in AGENT_KINDS and not plan.downstream_tools:
            services = dataclasses.replace(services, tools_withheld=True)
        return await EXECUTORS[kind](services, params, plan.principal)

    async def _run_child(self, plan: _Plan, library: Mapping[str, Definition], step_id: str, run_id: str,
                         context: dict[str, Any], decisions: _Decisions) -> StepOutcome:
        step = plan.definition.step(step_id)
        name = step_name(plan.prefix, step_id)
        child = plan.children[step_id]
        clock = self.services.clock
        started = clock()
        self.tracker.update(run_id, name, status="running", attempts=1, started_at=started)
        try:
            params = render_value(step.with_, context)
            inputs = check_inputs(child.definition, params.get("inputs") or {})
            scope = anyio.fail_after(step.timeout_s) if step.timeout_s else nullcontext()
            with scope:
                child_context = await self._run_dag(child, library, run_id, inputs, decisions)
            output = render_value(child.definition.outputs, child_context)
        except (Exception, RunFailed) as exc:  # noqa: BLE001 - recorded as the step's failure
            cls = "subworkflow_failed" if isinstance(exc, RunFailed) else error_class(exc)
            if isinstance(exc, InvalidWorkflow):
                cls = "invalid_inputs"
            _log_failure(run_id, name, cls, 1)
            return StepOutcome.failed(_message(exc, step.timeout_s), cls, attempts=1, started_at=started,
                                      ended_at=clock())
        return StepOutcome.completed(output, attempts=1, started_at=started, ended_at=clock())

    async def _run_approval(self, plan: _Plan, step_id: str, run_id: str, context: dict[str, Any],
                            decisions: _Decisions, limiter: anyio.CapacityLimiter) -> StepOutcome:
        step = plan.definition.step(step_id)
        name = step_name(plan.prefix, step_id)
        clock = self.services.clock
        timeout_s = float(step.with_.get("timeout_s") or step.timeout_s or APPROVAL_DEFAULT_TIMEOUT_S)

        async def opened_now() -> dict[str, Any]:
            return ApprovalOpened(opened_at=clock()).record()

        async with limiter:
            recorded = ApprovalOpened.from_record(await plan.extra[step_id].run(opened_now))
        opened = recorded.opened_at if recorded is not None else clock()

        async def decide() -> StepOutcome:
            try:
                message_text = render_value(step.with_.get("message"), context)
            except Exception:  # noqa: BLE001 - a message that cannot render is shown as written
                message_text = step.with_.get("message")
            self.tracker.update(run_id, name, status="waiting", attempts=1, started_at=opened,
                                output={"message": message_text})
            message: dict[str, Any] | None = None
            with anyio.move_on_after(max(opened + timeout_s - clock(), 0)):
                message = await decisions.wait(name)
            if message is None:
                _log_failure(run_id, name, "approval_timeout", 1)
                return StepOutcome.failed(f"no decision within {_seconds(timeout_s)}", "approval_timeout",
                                          output={"decision": "timeout"}, attempts=1, started_at=opened,
                                          ended_at=clock())
            output = {"decision": message.get("decision"), "by": message.get("by"), "role": message.get("role"),
                      "comment": message.get("comment"), "decided_at": message.get("at")}
            logger.info("workflow run %s: step %s %s by %s", run_id, name, output["decision"], output["by"])
            if output["decision"] != "approved":
                return StepOutcome.failed("rejected" + (f": {output['comment']}" if output["comment"] else ""),
                                          "rejected", output=output, attempts=1, started_at=opened,
                                          ended_at=clock())
            return StepOutcome.completed(output, attempts=1, started_at=opened, ended_at=clock())

        return await _record(plan.slots[step_id], decide)


async def _record(slot: StepSlot, outcome: StepOutcome | Callable[[], Any]) -> StepOutcome:
    """Run ``outcome`` (an async function returning a :class:`StepOutcome`, or one already decided, such as a
    skip) in its slot: recorded as JSON once, read back as a :class:`StepOutcome` in a replay."""

    async def run() -> dict[str, Any]:
        result = outcome if isinstance(outcome, StepOutcome) else await outcome()
        return result.record()

    recorded = StepOutcome.from_record(await slot.run(run))
    if recorded is None:
        raise RunFailed("a step record is not a step outcome (the run's records are from another layout)")
    return recorded


def _has_approvals(plan: _Plan) -> bool:
    return bool(plan.extra) or any(_has_approvals(child) for child in plan.children.values())


def _log_failure(run_id: str, name: str, error_class: str, attempts: int) -> None:
    logger.warning("workflow run %s: step %s failed (%s) after %d attempt(s)", run_id, name, error_class, attempts)


def _seconds(value: float) -> str:
    return f"{value:g} s" if math.isfinite(value) else "ever"


def _message(exc: BaseException, timeout_s: float | None) -> str:
    if isinstance(exc, TimeoutError) and not isinstance(exc, StepFailed):
        text = f"step timed out after {_seconds(timeout_s or 0)}" if timeout_s else "timed out"
    else:
        text = str(exc) or type(exc).__name__
    from server.security.redact import redact

    return redact(text)[:_ERROR_CHARS]
