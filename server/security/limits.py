"""Workflow ceilings: steps per workflow and duration per run (``[limits] workflow_max_steps``,
``workflow_max_duration_s``).

The per-call ceilings on the provider path (``max_tokens_per_call``, ``max_cost_usd_per_call``) are the policy
layer's (:mod:`server.pool.policy`); transport-level limits (body size, request rate, concurrent calls per key) are
in :mod:`server.security.http`.
"""

from __future__ import annotations

from server.errors import CeilingExceeded
from server.security.settings import LimitSettings


def check_workflow_ceilings(limits: LimitSettings, step_count: int, duration_s: float | None = None) -> float:
    """Refuse a workflow with more steps than ``workflow_max_steps``; return the run's deadline in seconds
    (the requested ``duration_s`` capped at ``workflow_max_duration_s``).

    Raises:
        CeilingExceeded: too many steps, or a requested duration over the cap.
    """
    if step_count > limits.workflow_max_steps:
        raise CeilingExceeded(f"the workflow has {step_count} steps, over this server's ceiling of "
                              f"{limits.workflow_max_steps}")
    if duration_s is not None and duration_s > limits.workflow_max_duration_s:
        raise CeilingExceeded(f"a duration of {duration_s:g} s is over this server's ceiling of "
                              f"{limits.workflow_max_duration_s:g} s per workflow run")
    return limits.workflow_max_duration_s if duration_s is None else duration_s


__all__ = ["CeilingExceeded", "check_workflow_ceilings"]
