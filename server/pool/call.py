"""One call on the provider path: who asks, for which tool, and what its attempts are recorded with.

A :class:`Call` is made per tool call (or workflow step) by :meth:`server.pool.ProviderPool.call` and handed to the
providers built for it, explicitly: the recording wrapper reads its labels, the fallback provider reports
progress through it, and its :class:`~server.pool.policy.CallPolicy` screens everything the call sends and gets
back under the caller's principal.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.pool.policy import CallPolicy
    from server.security import Principal

Progress = Callable[[float, "float | None", str], Awaitable[None]]
"""``(progress, total, message)``: what ``Context.report_progress`` takes (a no-op without a progress token)."""

current_workflow: ContextVar[str | None] = ContextVar("ai_orchestration_workflow", default=None)
"""The workflow a call is made for (set by the workflow interpreter for a run's steps); recorded with each call,
so ``monitor_operations(group_by="workflow")`` can group by it."""


@dataclass(slots=True)
class Call:
    """One call's context.

    Attributes:
        principal: who the call is made for (a run's steps: the run's starter; incident responses: a system
            principal). Policy decisions and the response cache are per principal.
        tool: the MCP tool (or step kind) on whose behalf the call runs; recorded.
        policy: the screening state of this call (see :mod:`server.pool.policy`).
        call_id: groups the call's attempts in the records.
        ab_bucket: the A/B bucket the call runs in, if any; recorded.
        workflow: the saved workflow whose step makes the call, if any; recorded.
        progress: where progress goes (attempt i of n, falling back to X), if anywhere.
        attempts: attempts recorded so far (the recording wrapper numbers them).
    """

    principal: Principal
    tool: str
    policy: CallPolicy
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ab_bucket: str | None = None
    workflow: str | None = field(default_factory=current_workflow.get)
    progress: Progress | None = None
    attempts: int = 0

    def next_attempt(self) -> int:
        """The next attempt's 1-based number within this call."""
        self.attempts += 1
        return self.attempts
