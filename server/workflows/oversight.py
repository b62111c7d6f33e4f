"""What the workflow service does around its own work, for governance and lineage: the governance rules and
the schedules' checks before a save, the schedules applied and the change audited after it, the rules again
before a start, the start and each approval decision audited; and, for the interpreter, each step's outcome and
each run's end audited (:class:`RunAudit`).

The audit entries of a run share its record id as their subject (the id the runtime runs it under).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from server.security import Principal
from server.workflows import schedules
from server.workflows.model import Definition, InvalidWorkflow

if TYPE_CHECKING:
    from server.operations.audit import AuditLog
    from server.store import WorkflowRecord
    from server.workflows.governance import Governance
    from server.workflows.outcome import StepOutcome


class Oversight:
    """Governance and audit hooks of :class:`server.workflows.service.WorkflowService` (each optional)."""

    def __init__(self, governance: Governance | None = None, audit: AuditLog | None = None) -> None:
        self.governance = governance
        self.audit = audit

    def before_save(self, definition: Definition, library: Mapping[str, Any], runtime: Any) -> None:
        """Raises :class:`InvalidWorkflow` (schedules) or :class:`~server.workflows.governance.PolicyViolation`."""
        problems = schedules.schedule_problems(definition, getattr(runtime, "schedules_supported", False))
        if problems:
            raise InvalidWorkflow(problems)
        if self.governance is not None:
            self.governance.check_save(definition, library)

    async def after_save(self, record: WorkflowRecord, definition: Definition, changed: bool, runtime: Any,
                         caller: Principal, previous: WorkflowRecord | None = None) -> None:
        """The schedules applied (also when unchanged: a save retried after a failed update heals it) and the
        change audited: a new version is ``workflow.saved``; ``schedule.changed`` too when its schedules differ
        from ``previous``'s (the version it replaced), removing every schedule included."""
        before = list((previous.definition if previous is not None else {}).get("schedules") or [])
        after = list(record.definition.get("schedules") or [])
        # Asked before applying (that removes them): a save with no schedules also heals a runtime still holding some.
        rescheduled = changed and self.audit is not None and (
            after != before or (not after and await _holds_schedules(runtime, record.name)))
        await schedules.apply(runtime, definition)
        if changed and self.audit is not None:
            subject = f"workflow:{record.name}"
            await self.audit.record("workflow.saved", actor=caller.id, subject=subject,
                                    id=f"{subject}:v{record.version}", outputs=record.definition,
                                    detail={"version": record.version, "steps": len(definition.steps),
                                            "tags": list(definition.tags)})
            if rescheduled:
                await self.audit.record("schedule.changed", actor=caller.id, subject=subject,
                                        id=f"{subject}:v{record.version}:schedules",
                                        detail={"schedules": [s.model_dump(mode="json") for s in definition.schedules]})

    def before_start(self, definition: Definition, library: Mapping[str, Any], inputs: Mapping[str, Any],
                     caller: Principal) -> None:
        if self.governance is not None:
            self.governance.check_start(definition, library, inputs, caller.id)

    async def started(self, key: str, definition: Definition, version: int | None, inputs: Mapping[str, Any],
                      caller: Principal) -> None:
        if self.audit is not None:
            await self.audit.record("run.started", actor=caller.id, subject=key, id=f"run:{key}:started",
                                    inputs=dict(inputs), detail={"workflow": definition.name, "version": version})

    async def decided(self, key: str, step: str, decision: str, comment: str | None, caller: Principal) -> None:
        if self.audit is not None:
            await self.audit.record("approval.decided", actor=caller.id, subject=key, step=step,
                                    detail={"decision": decision, "comment": comment, "role": caller.role})


async def _holds_schedules(runtime: Any, workflow: str) -> bool:
    """Whether the (open) runtime keeps schedules of ``workflow``."""
    if not getattr(runtime, "schedules_supported", False) or not getattr(runtime, "is_open", True):
        return False
    return workflow in await runtime.scheduled_workflows()


def oversight_for(config: Any, audit: AuditLog | None) -> Oversight:
    """The oversight a server's configuration asks for (``[[governance.rules]]`` over its providers)."""
    from server.workflows.governance import Governance

    rules = getattr(getattr(config, "governance", None), "rules", ())
    governance = Governance(rules, getattr(config, "providers", ())) if rules else None
    return Oversight(governance, audit)


class RunAudit:
    """The interpreter's side of the trail: one ``step.finished`` entry per step as its outcome is recorded,
    and ``run.finished`` when the run ends (ids per run and step: a replay appends nothing twice)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    async def step(self, run_id: str, name: str, kind: str, outcome: StepOutcome, seen: Any, actor: str,
                   depends_on: Sequence[str]) -> None:
        output = outcome.output
        detail: dict[str, Any] = {"kind": kind, "status": outcome.status, "attempts": outcome.attempts,
                                  "depends_on": list(depends_on)}
        for key in ("error_class", "reason"):
            if getattr(outcome, key):
                detail[key] = getattr(outcome, key)
        if isinstance(output, Mapping):
            detail.update(answered_by(output))
            if kind == "approval":
                detail.update({k: output.get(k) for k in ("decision", "by", "comment")})
                actor = str(output.get("by") or actor)
        fields: dict[str, Any] = {"outputs": output}
        if seen is not None:
            fields["inputs"] = seen
        await self.audit.record("step.finished", actor=actor, subject=run_id, step=name,
                                id=f"run:{run_id}:step:{name}", detail=detail, **fields)

    async def finished(self, run_id: str, status: str, actor: str, result: Any = None, error: str | None = None
                       ) -> None:
        detail = {"status": status} | ({"error": error} if error else {})
        await self.audit.record("run.finished", actor=actor, subject=run_id, id=f"run:{run_id}:finished",
                                detail=detail, **({"outputs": result} if result is not None else {}))


def answered_by(output: Mapping[str, Any]) -> dict[str, Any]:
    """Which provider and model answered a model step (``orchestrate``: one; ``consensus``: each answer's)."""
    if isinstance(output.get("provider"), str):
        return {"provider": output["provider"], "model": output.get("model")}
    responses = output.get("responses")
    if isinstance(responses, list):
        return {"answers": [{"provider": r.get("provider"), "model": r.get("model")} for r in responses
                            if isinstance(r, Mapping)][:50]}
    return {}
