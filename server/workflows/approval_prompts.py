"""Asking the person behind a waiting client to decide an approval, while the client waits on the run.

When ``run_workflow`` waits and its client can be asked (MCP elicitation, :mod:`tools.workflows`), each
approval step that opens during the wait, and that the waiting principal may decide (the same rules as
``workflow_run`` approve/reject: the step's ``approvers`` and ``not_starter``, the approver being the
authenticated principal), is put to that person once. An answer is decided exactly as
:meth:`WorkflowService.decide` decides; no answer (declined, cancelled, or the client could not ask) leaves the
step waiting for ``workflow_run`` approve/reject, as without elicitation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio

from server.security import Principal

if TYPE_CHECKING:
    from server.workflows.service import Progress, WorkflowService
    from server.workflows.status import RunStatus

logger = logging.getLogger(__name__)
OTHER_REPLICA_POLL_S = 1.0
"""How often a run that executes elsewhere is read again for approvals to ask about, seconds."""


@dataclass(frozen=True, slots=True)
class ApprovalAnswer:
    """What the person decided: ``approved`` or ``rejected``, with an optional comment."""

    decision: Literal["approved", "rejected"]
    comment: str | None = None


AskApprover = Callable[[str, str], Awaitable[ApprovalAnswer | None]]
"""``(run_id, step) -> answer``, or ``None`` when the person gave none."""


async def wait_asking(service: WorkflowService, run_id: str, wait_s: float, progress: Progress | None,
                      caller: Principal, ask: AskApprover) -> RunStatus:
    """:meth:`WorkflowService.wait`, asking ``caller`` (through ``ask``) to decide each approval step it may
    decide that waits meanwhile (see the module docstring)."""
    async with anyio.create_task_group() as group:
        group.start_soon(_ask_while_waiting, service, run_id, caller, ask)
        status = await service.wait(run_id, wait_s, progress, caller)
        group.cancel_scope.cancel()
    return status


async def _ask_while_waiting(service: WorkflowService, run_id: str, caller: Principal, ask: AskApprover) -> None:
    from server.workflows.service import ApprovalRefused, RunConflict, RunNotFound

    asked: set[str] = set()
    try:
        key, steps = await service.approvals_for(run_id, caller)
    except RunNotFound:
        return
    while True:
        changed = service.tracker.changed(key)  # before the read, so that no change slips between
        try:
            key, steps = await service.approvals_for(run_id, caller)
        except RunNotFound:
            return
        for step in (s for s in steps if s not in asked):
            asked.add(step)  # each step is put to the person once
            answer = await ask(run_id, step)
            if answer is None:
                continue  # the step waits for workflow_run approve/reject
            try:
                await service.decide(run_id, answer.decision, step=step, comment=answer.comment, caller=caller)
            except (RunConflict, ApprovalRefused) as exc:  # decided by someone else meanwhile, or no longer ours
                logger.info("run %s: the approval answered through the client was not taken (%s)", run_id, exc)
        # A run executing on another replica changes nothing here: read it again now and then.
        with anyio.move_on_after(None if service.tracker.get(key) is not None else OTHER_REPLICA_POLL_S):
            await changed.wait()
