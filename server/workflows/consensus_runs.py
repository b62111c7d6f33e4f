"""A ``consensus`` call run durably: a one-step workflow run whose step is the consensus.

This is what a ``consensus`` MCP task is (:mod:`server.app.run_tasks`): the run record and the runtime's step
records make it survive a restart and answer from any replica, its owner scopes it, and cancelling the run
cancels the fan-out. The caller's arguments travel as the run's inputs, and the step's parameters are single
placeholders over them, so nothing the caller wrote is rendered as a template. The run's one output,
``consensus``, is the consensus result as the tool returns it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from server.security import LOCAL, Principal

if TYPE_CHECKING:
    from server.consensus.report import ConsensusRequest
    from server.consensus.service import ConsensusService
    from server.workflows.service import WorkflowService
    from server.workflows.status import RunStatus

CONSENSUS_RUN = "consensus-task"
"""The workflow name of a consensus run (what run listings show for it)."""
STEP = "consensus"


async def start_consensus_run(workflows: WorkflowService, consensus: ConsensusService, ask: ConsensusRequest,
                              principal: Principal = LOCAL) -> str:
    """Check ``ask`` as a direct call would (nothing starts when it is refused), then start its run.

    Returns:
        The run id, durable on return.

    Raises:
        ConsensusInputError: ``ask`` carries the host's answer (a run has no client to ask).
        as :meth:`ConsensusService.check` and :meth:`WorkflowService.start`.
    """
    from server.consensus.report import ConsensusInputError

    if ask.host is not None:
        raise ConsensusInputError("the host's model can join a direct consensus call only, not a run or a task")
    await consensus.check(ask, principal)
    inputs = {key: list(value) if isinstance(value, tuple) else value
              for key, value in asdict(ask).items() if value is not None and value != () and key != "host"}
    definition = {"name": CONSENSUS_RUN,
                  "steps": [{"id": STEP, "kind": "consensus", "with": {key: "{{ inputs.%s }}" % key for key in inputs}}],
                  "outputs": {STEP: "{{ steps.%s.output }}" % STEP}}
    run_id, _ = await workflows.start(definition, inputs, caller=principal)
    return run_id


def consensus_output(status: RunStatus) -> dict[str, Any] | None:
    """The consensus result of a completed consensus run (``None`` for any other run)."""
    outputs = status.outputs or {}
    if status.workflow != CONSENSUS_RUN or set(outputs) != {STEP} or not isinstance(outputs[STEP], dict):
        return None
    return outputs[STEP]
